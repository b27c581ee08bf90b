from wirekube_agent.endpoint import registration
from wirekube_agent.paths.rules import PathState
from wirekube_agent.status import peerstatus as status
from wirekube_common.crd import PeerStatus

from .helpers import b64, node


def test_status_derivation_and_rate_limit() -> None:
    up = PathState("direct", "up", 0, None)
    relay = PathState("relay", "probing", 0, None)
    down = PathState("direct", "probing", 0, None)
    local = status.LocalReport(
        endpoint_discovery_method="internal", internal_endpoint="10.0.0.1:51820"
    )
    new = status.derive(
        {"node-b": up, "node-c": relay, "node-d": down},
        {"node-b": 1000.0},
        local,
        PeerStatus(),
        now=1010.0,
    )
    assert new.connected is True
    assert dict(new.peer_transports) == {"node-b": "direct", "node-c": "relay"}
    assert new.transport_mode == "mixed"
    assert new.last_handshake == status.rfc3339(1000.0)
    assert new.endpoint_discovery_method == "internal"
    # lastHandshake moves only by whole minutes, so a rekey alone writes nothing
    later = status.derive(
        {"node-b": up, "node-c": relay, "node-d": down}, {"node-b": 1030.0}, local, new, 1031.0
    )
    assert later.last_handshake == new.last_handshake
    full = status.WriteBudget()
    assert not status.should_write(new, later, full, now=1031.0)  # nothing changed
    changed = status.derive({"node-b": up}, {"node-b": 1030.0}, local, new, 1031.0)
    assert status.should_write(new, changed, full, now=1031.0)


def test_status_writes_are_a_token_bucket() -> None:
    budget = status.WriteBudget(at=0.0)
    a, b = PeerStatus(connected=False), PeerStatus(connected=True)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):  # a burst, spaced
        assert status.should_write(a, b, budget, t)
        budget = budget.spend(t)
        assert not status.should_write(a, b, budget, t + 0.4)  # too soon after a write
    assert not status.should_write(a, b, budget, 2.5)
    assert not status.should_write(a, b, budget, 4.0)
    assert status.should_write(a, b, budget, 5.3)  # then one per refill period
    budget = budget.spend(5.3)
    assert not status.should_write(a, b, budget, 6.0)
    writes = 5 + 1
    t = 5.3
    while t < 3600:  # an hour of constant change: bounded by the refill rate
        t += 0.5
        if status.should_write(a, b, budget, t):
            budget = budget.spend(t)
            writes += 1
    assert writes <= 5 + 3600 / 5 + 1


def test_nat_type_is_never_overwritten_by_undetermined() -> None:
    prev = PeerStatus(nat_type="symmetric")
    new = status.derive({}, {}, status.LocalReport(nat_type=None), prev, 0.0)
    assert new.nat_type == "symmetric"
    assert new.connected is False and new.transport_mode is None


def test_registration_create_and_patch() -> None:
    n = node("a", "10.0.0.1", uid="u1")
    body = registration.create_body(n, b64(1), "198.18.0.1:51820")
    assert body["metadata"]["name"] == "node-a"
    assert body["metadata"]["labels"] == {"wirekube.io/node": "a"}
    assert body["metadata"]["ownerReferences"][0] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "a",
        "uid": "u1",
    }
    assert body["spec"] == {
        "publicKey": b64(1),
        "allowedIPs": ["10.0.0.1/32"],
        "persistentKeepalive": 25,
        "endpoint": "198.18.0.1:51820",
    }
    assert registration.patch_for(body, n, b64(1), "198.18.0.1:51820") is None
    moved = registration.patch_for(body, n, b64(1), "198.18.0.7:51820")
    assert moved == {"spec": {"endpoint": "198.18.0.7:51820"}}


def test_user_managed_allowed_ips_are_never_overwritten() -> None:
    n = node("a", "10.0.0.1")
    body = registration.create_body(n, b64(1), None)
    body["spec"]["allowedIPs"] = []  # the user made this node passive
    assert registration.patch_for(body, n, b64(1), None) is None
    body["spec"]["allowedIPs"] = ["10.0.0.1/32", "192.168.5.0/24"]
    assert registration.patch_for(body, n, b64(1), None) is None
    # while the agent still owns the field, a new node IP is followed
    owned = registration.create_body(n, b64(1), None)
    renumbered = node("a", "10.0.0.7")
    patch = registration.patch_for(owned, renumbered, b64(1), None)
    assert patch is not None and patch["spec"] == {"allowedIPs": ["10.0.0.7/32"]}
    assert patch["metadata"]["annotations"] == {registration.MANAGED_ALLOWED_IPS: "10.0.0.7/32"}


def test_merge_patch_nulls_removed_keys() -> None:
    cur = {"connected": True, "peerTransports": {"a": "direct", "b": "relay"}, "natType": "cone"}
    new = {"connected": True, "peerTransports": {"a": "relay"}}
    assert status.merge_patch(cur, new) == {
        "natType": None,
        "peerTransports": {"a": "relay", "b": None},
    }
