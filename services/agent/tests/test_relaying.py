import ipaddress

from wirekube_agent import decide
from wirekube_agent.relay.link import LinkStats
from wirekube_agent.relaying.manager import RelayManager
from wirekube_agent.relaying.target import Lookups, nodes_due, relay_target, service_due
from wirekube_agent.timers import RELAY_LOSS_GRACE_S, RELAY_NODES_REFRESH_S, RESYNC_INTERVAL_S
from wirekube_common.crd import MeshSpec
from wirekube_common.relayaddress import NodeAddresses

from .helpers import node


def mesh(**relay: object) -> MeshSpec:
    return MeshSpec.from_dict({"relay": relay})


N = node("a", "10.0.0.1")


def test_mode_never_and_no_provider_mean_no_relay() -> None:
    assert not relay_target(
        mesh(mode="never", provider="external", external={"endpoint": "1.2.3.4:3478"}), N
    ).configured
    t = relay_target(mesh(mode="auto"), N)
    assert not t.configured and "no relay provider" in t.reason


def test_external_ip_or_dns_name() -> None:
    t = relay_target(mesh(provider="external", external={"endpoint": "198.18.0.10:3478"}), N)
    assert t.addresses == (("198.18.0.10", 3478),)
    d = relay_target(
        mesh(provider="external", external={"endpoint": "relays.lab:3478"}),
        N,
        dns_server="198.18.0.53",
    )
    assert d.dns is not None and (d.dns.name, d.dns.port, tuple(d.dns.nameservers)) == (
        "relays.lab",
        3478,
        ("198.18.0.53",),
    )
    bad = relay_target(mesh(provider="external", external={"endpoint": "no-port"}), N)
    assert not bad.configured and "host:port" in bad.reason


def service(**kw: object) -> dict[str, object]:
    spec = {"clusterIP": "10.96.0.50", "ports": [{"port": 3478, "nodePort": 31478}]}
    spec.update(kw.pop("spec", {}))  # type: ignore[arg-type]
    return {"spec": spec, **kw}


def test_managed_order_external_ip_then_lb_then_nodeport_never_cluster_ip() -> None:
    m = mesh(provider="managed", managed={"port": 3478})
    with_ext = service(
        spec={"externalIPs": ["198.18.0.20"]},
        status={"loadBalancer": {"ingress": [{"ip": "198.18.0.30"}]}},
    )
    assert relay_target(m, N, with_ext).addresses == (("198.18.0.20", 3478),)
    with_lb = service(status={"loadBalancer": {"ingress": [{"ip": "198.18.0.30"}]}})
    assert relay_target(m, N, with_lb).addresses == (("198.18.0.30", 3478),)
    with_lb_name = service(status={"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}})
    dns = relay_target(m, N, with_lb_name).dns
    assert dns is not None and dns.name == "lb.example"
    assert relay_target(m, N, service()).addresses == (("10.0.0.1", 31478),)
    public = node("a", "10.0.0.1", external_ips=(ipaddress.ip_address("203.0.113.9"),))
    assert relay_target(m, public, service()).addresses == (("203.0.113.9", 31478),)
    cluster_ip_only = {"spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 3478}]}}
    t = relay_target(m, N, cluster_ip_only)
    assert not t.configured and "NodePort" in t.reason
    assert not relay_target(m, N, None).configured


def test_managed_node_port_prefers_another_nodes_external_ip_and_the_controllers_choice() -> None:
    m = mesh(provider="managed", managed={"port": 3478})
    others = [
        NodeAddresses("b", ("10.0.0.2",), ("203.0.113.2",)),
        NodeAddresses("c", ("10.0.0.3",), ("203.0.113.3",)),
    ]
    # This node (N) is NAT'd: InternalIP only; a node ExternalIP wins.
    assert relay_target(m, N, service(), nodes=others).addresses == (("203.0.113.2", 31478),)
    # The controller's choice (mesh status) is kept while it is valid ...
    kept = relay_target(m, N, service(), nodes=others, current="203.0.113.3")
    assert kept.addresses == (("203.0.113.3", 31478),)
    # ... and ignored when it is not an ExternalIP of a usable node.
    gone = relay_target(m, N, service(), nodes=others, current="198.51.100.1")
    assert gone.addresses == (("203.0.113.2", 31478),)


class _Worker:
    """Stands in for the bridge worker: only its replica links matter here."""

    alive = True
    REPLICAS = ("198.18.0.10:3478", "198.18.0.11:3478")

    def __init__(self) -> None:
        self.live: tuple[str, ...] = ("198.18.0.10:3478",)
        self.errors: dict[str, str] = {}

    def links(self) -> dict[str, dict[str, object]]:
        return {
            r: {
                "up": r in self.live,
                "connects": 1,
                "error": self.errors.get(r, ""),
                "frames_tx": 5,
                "frames_rx": 4,
            }
            for r in self.REPLICAS
        }


def test_why_no_relay_link_is_up_becomes_the_reason() -> None:
    manager = RelayManager(b"\x01" * 32)
    worker = _Worker()
    manager.bridge = worker  # type: ignore[assignment]
    worker.live = ()
    worker.errors = {"198.18.0.11:3478": "ProxyRefused: proxy refused the tunnel: HTTP/1.1 407 X"}
    manager.available  # noqa: B018 - the property refreshes the links
    assert manager.reason == (
        "relay unreachable: 198.18.0.11:3478: ProxyRefused: proxy refused the tunnel: HTTP/1.1 407 X"
    )
    worker.live = ("198.18.0.10:3478",)
    assert manager.available and manager.reason == ""


def test_a_relay_that_reconnects_stays_available() -> None:
    """A relay link that drops and comes back within the grace keeps relayed
    peers on the relay; one that stays down does not."""
    now = [100.0]
    manager = RelayManager(b"\x01" * 32, clock=lambda: now[0])
    assert not manager.available  # no relay configured
    worker = _Worker()
    manager.bridge = worker  # type: ignore[assignment]
    assert manager.available
    # What the metrics read: every replica link, up or not.
    assert manager.links == {
        "198.18.0.10:3478": LinkStats(True, connects=1, frames_tx=5, frames_rx=4),
        "198.18.0.11:3478": LinkStats(False, connects=1, frames_tx=5, frames_rx=4),
    }
    assert manager.last_available
    worker.live = ()  # the link is reconnecting
    now[0] = 101.0
    assert manager.available
    now[0] = 100.0 + RELAY_LOSS_GRACE_S + 0.1
    assert not manager.available  # gone for longer than the grace
    assert not manager.last_available
    worker.live = ("198.18.0.10:3478",)
    assert manager.available


# -- decide.relay and when its inputs are read (relaying.target) ------------------------
def test_decide_relay_reads_the_service_only_for_a_managed_relay_in_use() -> None:
    with_lb = service(status={"loadBalancer": {"ingress": [{"ip": "198.18.0.30"}]}})
    managed = mesh(provider="managed", managed={"port": 3478})
    external = mesh(provider="external", external={"endpoint": "198.18.0.10:3478"})
    never = mesh(mode="never", provider="managed", managed={"port": 3478})
    rows = [
        (managed, (("198.18.0.30", 3478),), ""),
        # A Service read while the mesh was managed does not leak into another provider.
        (external, (("198.18.0.10", 3478),), ""),
        (never, (), "relay mode is never"),
    ]
    for spec, addresses, reason in rows:
        target = decide.relay(decide.RelaySeen(spec, N, service=with_lb))
        assert (target.addresses, target.reason) == (addresses, reason)
    # Nodes count only for a NodePort (the address may be another node's ExternalIP).
    other = (NodeAddresses("b", ("10.0.0.2",), ("203.0.113.2",)),)
    node_port = decide.relay(decide.RelaySeen(managed, N, service=service(), nodes=other))
    assert node_port.addresses == (("203.0.113.2", 31478),)
    ignored = decide.relay(decide.RelaySeen(managed, N, service=with_lb, nodes=other))
    assert ignored.addresses == (("198.18.0.30", 3478),)


def test_relay_lookups_are_due_at_their_pace() -> None:
    managed = mesh(provider="managed", managed={"port": 3478})
    external = mesh(provider="external", external={"endpoint": "198.18.0.10:3478"})
    fresh = Lookups()
    assert service_due(managed, fresh, 0.0) and not service_due(external, fresh, 0.0)
    read = Lookups(service_at=100.0)
    assert not service_due(managed, read, 100.0 + RESYNC_INTERVAL_S - 1)
    assert service_due(managed, read, 100.0 + RESYNC_INTERVAL_S)
    # The Node list: only for a NodePort; the controller's choice moving away
    # from what we listed for relists at the resync pace, otherwise the refresh.
    listed = Lookups(nodes_at=100.0, nodes_for=("203.0.113.2",))
    assert not nodes_due(None, None, fresh, 0.0)
    assert nodes_due(service(), None, fresh, 0.0)
    assert not nodes_due(service(), "203.0.113.2", listed, 100.0 + RESYNC_INTERVAL_S)
    assert not nodes_due(service(), "203.0.113.3", listed, 100.0 + RESYNC_INTERVAL_S - 1)
    assert nodes_due(service(), "203.0.113.3", listed, 100.0 + RESYNC_INTERVAL_S)
    assert nodes_due(service(), "203.0.113.2", listed, 100.0 + RELAY_NODES_REFRESH_S)
