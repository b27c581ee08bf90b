"""Smoke test: wireguard-go on two lab hosts behind different NATs, configured through our
UAPI client, completes a handshake and carries pings.

Two NAT pairings:

* address-restricted <-> port-restricted: both sides know each other's public endpoint
  (port-preserving NATs keep the listen port) and open the path by sending at once;
* symmetric -> full-cone: only the symmetric side knows an endpoint; the full-cone side
  learns the symmetric NAT's fresh random port from the handshake (WireGuard roaming).
  A full cone admits strangers only to a mapping that exists: the cone side first sends
  from its listen port to some internet host (what its STUN request does in the product).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator

import pytest

from wirekube_common.wgkey import generate_private_key, public_key
from wirekube_common.wireguard.types import DeviceConfig, PeerConfig
from wirekube_common.wireguard.uapi import UapiClient
from wirekube_lab.lab import Lab
from wirekube_lab.processes import LabProcess

LISTEN_PORT = 51820
TOPOLOGY = {
    "name": "wg-smoke",
    "networks": {
        "home-a": {"nat": "address-restricted"},
        "home-p": {"nat": "port-restricted"},
        "cloud": {"nat": "symmetric"},
        "cone": {"nat": "full-cone"},
    },
    "hosts": {
        "a": {"network": "home-a", "role": "node"},
        "p": {"network": "home-p", "role": "node"},
        "s": {"network": "cloud", "role": "node"},
        "c": {"network": "cone", "role": "node"},
        "x": {"network": "internet"},
    },
}
TUNNEL = {"a": "10.99.0.1", "p": "10.99.0.2", "s": "10.99.0.3", "c": "10.99.0.4"}


@pytest.fixture(scope="module")
def lab(module_lab_factory: Callable[..., Lab]) -> Lab:
    return module_lab_factory(TOPOLOGY, name="wg")


class Node:
    def __init__(self, lab: Lab, host: str) -> None:
        self.lab, self.host = lab, host
        self.ifname = lab.wireguard_ifname(host)
        self.private = generate_private_key()
        self.public = public_key(self.private)
        self.proc: LabProcess = lab.spawn(host, ["wireguard-go", "-f", self.ifname], name="wg")
        self.uapi = UapiClient(self.ifname)  # /var/run/wireguard is shared: unique names
        deadline = time.monotonic() + 10
        while not self.uapi.exists():
            assert self.proc.alive, self.proc.log_text()
            assert time.monotonic() < deadline, "wireguard-go did not create its socket"
            time.sleep(0.02)
        self.uapi.set(DeviceConfig(private_key=self.private, listen_port=LISTEN_PORT))
        lab.exec(host, ["ip", "address", "add", f"{TUNNEL[host]}/24", "dev", self.ifname])

    def up(self) -> None:
        """Bring the interface up once peers are configured (wireguard-go then starts them)."""
        self.lab.exec(self.host, ["ip", "link", "set", self.ifname, "up"])

    def add_peer(self, other: Node, endpoint: tuple[str, int] | None) -> None:
        self.uapi.set(
            DeviceConfig(
                peers=(
                    PeerConfig(
                        public_key=other.public,
                        endpoint=endpoint,
                        allowed_ips=(ipaddress.ip_network(f"{TUNNEL[other.host]}/32"),),
                        persistent_keepalive=1,
                    ),
                )
            )
        )


@pytest.fixture
def nodes(lab: Lab) -> Iterator[Callable[[str], Node]]:
    made: list[Node] = []

    def make(host: str) -> Node:
        node = Node(lab, host)
        made.append(node)
        return node

    yield make
    for node in made:
        node.proc.stop()


def wait_handshake(node: Node, peer: Node, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while node.uapi.get().peers[peer.public].last_handshake == 0:
        assert time.monotonic() < deadline, f"{node.host}: no handshake with {peer.host}"
        time.sleep(0.05)


def assert_tunnel(lab: Lab, x: Node, y: Node) -> None:
    before = x.uapi.get().peers[y.public]
    result = lab.ping(x.host, TUNNEL[y.host], count=5, interval=0.1)
    assert result.ok, result
    after = x.uapi.get().peers[y.public]
    # The pings really went through WireGuard: its counters moved by at least 5 packets each way.
    assert after.tx_bytes - before.tx_bytes >= 5 * 84
    assert after.rx_bytes - before.rx_bytes >= 5 * 84


def test_hole_punching_between_two_cone_nats(lab: Lab, nodes: Callable[[str], Node]) -> None:
    a, p = nodes("a"), nodes("p")
    # Both NATs preserve the port: the public endpoint is the router's address + the listen port.
    a.add_peer(p, (lab.public_address("p"), LISTEN_PORT))
    p.add_peer(a, (lab.public_address("a"), LISTEN_PORT))
    a.up()
    p.up()
    wait_handshake(a, p)
    wait_handshake(p, a)
    assert_tunnel(lab, a, p)
    assert_tunnel(lab, p, a)
    assert a.uapi.get().peers[p.public].endpoint == (lab.public_address("p"), LISTEN_PORT)


def test_symmetric_side_initiates_to_a_full_cone(lab: Lab, nodes: Callable[[str], Node]) -> None:
    s, c = nodes("s"), nodes("c")
    # Open the cone's mapping for the listen port: a keepalive towards an unrelated host.
    c.uapi.set(
        DeviceConfig(
            peers=(
                PeerConfig(
                    public_key=public_key(generate_private_key()),
                    endpoint=(lab.address("x"), 9),
                    allowed_ips=(),
                    persistent_keepalive=1,
                ),
            )
        )
    )
    c.up()
    mapped = re.compile(rf"\b{LISTEN_PORT}\b[^:,]*: {lab.address('c')} \. {LISTEN_PORT}\b")
    deadline = time.monotonic() + 10
    while not mapped.search(
        lab.exec("cone-gw", ["nft", "list", "map", "ip", "wklab", "udp_mappings"]).stdout
    ):
        assert time.monotonic() < deadline, "the cone NAT never mapped the listen port"
        time.sleep(0.05)
    c.add_peer(s, None)  # the cone side does not know where the symmetric side will come from
    s.add_peer(c, (lab.public_address("c"), LISTEN_PORT))
    s.up()
    wait_handshake(s, c)
    assert_tunnel(lab, s, c)
    assert_tunnel(lab, c, s)
    learned = c.uapi.get().peers[s.public].endpoint
    assert learned is not None
    assert learned[0] == lab.public_address("s")
    assert learned[1] != LISTEN_PORT  # a fresh random port of the symmetric NAT
