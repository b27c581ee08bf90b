"""decide's writes to our own WireKubePeer: the registration (which endpoint
and key to publish, and when) and the status (what to publish, and whether
it changed enough to write), driven by tables of observations (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from wirekube_agent import decide
from wirekube_agent.endpoint.registration import MANAGED_ALLOWED_IPS
from wirekube_agent.timers import STATUS_DETAIL_SAMPLE_S, STATUS_SPACING_S
from wirekube_common import wgkey

from .helpers import b64, key
from .test_decide import CONE, SYMMETRIC, observe

SITES = {
    "home-1": ("192.168.1.10", "198.18.3.1", CONE),
    "cloud-1": ("10.1.0.2", "198.18.1.1", SYMMETRIC),
}
OWN_KEY = key(9)


def own_object(rv: str = "7", endpoint: str | None = "198.18.3.1:51820", **status: Any) -> dict:
    """Our WireKubePeer as the agent itself registered it (``create_body``)."""
    spec: dict[str, Any] = {
        "publicKey": b64(9),
        "allowedIPs": ["192.168.1.10/32"],
        "persistentKeepalive": 25,
    }
    if endpoint:
        spec["endpoint"] = endpoint
    return {
        "metadata": {
            "name": "node-home-1",
            "resourceVersion": rv,
            "labels": {"wirekube.io/node": "home-1"},
            "annotations": {MANAGED_ALLOWED_IPS: "192.168.1.10/32"},
            "ownerReferences": [{"kind": "Node", "uid": "uid-node"}],
        },
        "spec": spec,
        "status": status,
    }


def seen(now: float = 100.0, **kw: Any) -> decide.Observation:
    base = observe(SITES, "home-1", now)
    return replace(
        base,
        own_key=OWN_KEY,
        discovered=kw.pop("discovered", ("198.18.3.1", 51820)),
        discovered_by=kw.pop("discovered_by", "stun"),
        **kw,
    )


# -- registration -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("own", "discovered", "pending", "expected"),
    [
        # Not registered yet: create, with the endpoint discovery found.
        (None, ("198.18.3.1", 51820), False, ("create", "198.18.3.1:51820")),
        # Discovery found nothing yet: create without an endpoint.
        (None, None, False, ("create", None)),
        # Registered as we would: nothing to write.
        (own_object(), ("198.18.3.1", 51820), False, None),
        # Our NAT mapping moved: publish the new endpoint.
        (own_object(), ("198.18.3.1", 40001), False, ("patch", "198.18.3.1:40001")),
        # Discovery lost its answer: keep the published endpoint (no write).
        (own_object(), None, False, None),
        # A key rotation's own write goes first.
        (None, ("198.18.3.1", 51820), True, None),
        (own_object(), ("198.18.3.1", 40001), True, None),
    ],
)
def test_registration_publishes_what_discovery_found(
    own: dict | None,
    discovered: tuple[str, int] | None,
    pending: bool,
    expected: tuple[str, str | None] | None,
) -> None:
    decision = decide.decide(
        seen(own=own, discovered=discovered, rotation_pending=pending), decide.Memory()
    )
    write = decision.registration
    if expected is None:
        assert write is None
        return
    kind, endpoint = expected
    assert write is not None
    assert write.create == (kind == "create")
    assert write.body["spec"].get("endpoint") == endpoint
    if write.create:
        assert write.body["spec"]["publicKey"] == wgkey.encode(OWN_KEY)
        assert write.body["metadata"]["name"] == "node-home-1"


def test_a_registration_made_is_not_repeated_until_our_copy_moves_on() -> None:
    moved = seen(own=own_object(rv="7"), discovered=("198.18.3.1", 40001))
    first = decide.decide(moved, decide.Memory())
    assert first.registration is not None
    # Made: our watch still shows the old copy (same resourceVersion), so
    # the same write against it is not made again.
    made = first.memory.after_registration(first.registration)
    assert decide.decide(moved, made).registration is None
    # Not made (the API refused): the next pass tries again.
    assert decide.decide(moved, first.memory).registration == first.registration
    # The copy moved on and still differs: write again.
    later = replace(moved, own=own_object(rv="8"))
    assert decide.decide(later, made).registration is not None


# -- status -------------------------------------------------------------------------
def test_no_status_before_our_object_exists() -> None:
    assert decide.decide(seen(own=None), decide.Memory()).status is None


def test_status_is_written_when_it_changes_then_not_again() -> None:
    first = decide.decide(seen(own=own_object()), decide.Memory())
    write = first.status
    assert write is not None
    assert write.patch["endpointDiscoveryMethod"] == "stun"
    assert write.patch["natType"] == "cone"
    assert write.patch["publicIP"] == "198.18.3.1"
    assert write.patch["internalEndpoint"] == "192.168.1.10:51820"
    assert set(write.patch["peerPaths"]) == {"cloud-1"}
    # Written; our watch has not shown it yet (same resourceVersion): the
    # baseline is what we wrote, so the same pass again writes nothing.
    memory = first.memory.after_status(write, 100.0)
    again = decide.decide(seen(now=101.0, own=own_object()), memory)
    assert again.status is None
    # Not written (the API refused): the next pass tries again.
    assert decide.decide(seen(now=101.0, own=own_object()), first.memory).status is not None


def test_status_writes_keep_their_spacing() -> None:
    first = decide.decide(seen(own=own_object()), decide.Memory())
    assert first.status is not None
    memory = first.memory.after_status(first.status, 100.0)
    # Our NAT type changed right after the write: it waits for the spacing.
    changed = replace(seen(own=own_object()).local, nat_type="symmetric")
    soon = seen(now=100.0 + STATUS_SPACING_S / 2, own=own_object(), local=changed)
    assert decide.decide(soon, memory).status is None
    later = seen(now=100.0 + STATUS_SPACING_S, own=own_object(), local=changed)
    write = decide.decide(later, memory).status
    assert write is not None
    assert write.patch["natType"] == "symmetric"
    # The rule that explains the path changed with it and is written at once.
    assert write.patch["peerPaths"]["cloud-1"]["rule"] == "symmetric-symmetric"


def test_probe_details_are_sampled_on_path_changes_and_every_sample_period() -> None:
    cloud = key(2)
    first = decide.decide(seen(rtts={cloud: (0.010, 0.030)}), decide.Memory())
    assert first.probes.probes["cloud-1"].relay_rtt == 0.030
    # Same paths, new round trips: the sample stands until its period is over.
    same = seen(now=101.0, rtts={cloud: (0.020, 0.040)})
    second = decide.decide(same, first.memory)
    assert second.paths == first.paths
    assert second.probes == first.probes
    due = seen(now=100.0 + STATUS_DETAIL_SAMPLE_S, rtts={cloud: (0.020, 0.040)})
    assert decide.decide(due, first.memory).probes.probes["cloud-1"].relay_rtt == 0.040
