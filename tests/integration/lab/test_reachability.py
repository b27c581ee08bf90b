"""The API server door: every lab host reaches 100.64.0.1, the root namespace reaches nothing.

A TCP server bound to this run's root-side control-link address plays the
apiserver (the real one listens on 0.0.0.0 in the root namespace). Two labs
run at once to show that runs coexist, each with its own /30.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from wirekube_lab.lab import Lab

from .conftest import NAT_KINDS_TOPOLOGY, tool


class FakeApiserver:
    """Accepts connections and answers each with one line naming the peer it saw."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((address, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"hello {peer[0]}\n".encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def labs(module_lab_factory: Callable[..., Lab]) -> tuple[Lab, Lab]:
    return (
        module_lab_factory(NAT_KINDS_TOPOLOGY, name="reach-a"),
        module_lab_factory("topology-5-air-gapped-tcp", name="reach-b"),
    )


@pytest.fixture(scope="module")
def servers(labs: tuple[Lab, Lab]) -> Iterator[list[FakeApiserver]]:
    servers = [FakeApiserver(str(lab.plan.control.root_address)) for lab in labs]
    yield servers
    for server in servers:
        server.close()


def test_each_run_has_its_own_control_subnet(labs: tuple[Lab, Lab]) -> None:
    a, b = labs
    assert a.plan.control.cidr != b.plan.control.cidr
    for lab in labs:
        assert lab.plan.control.cidr.subnet_of(ipaddress.ip_network("100.64.0.0/16"))
        assert str(lab.plan.control.cidr) != "100.64.0.0/30"
        assert lab.apiserver_address == "100.64.0.1"


@pytest.mark.parametrize(
    "host", ["h-pub", "h-fc", "h-ar", "h-pr", "h-sym", "h-sym-public", "h-tcp", "stun"]
)
def test_every_host_reaches_the_apiserver_address(
    labs: tuple[Lab, Lab], servers: list[FakeApiserver], host: str
) -> None:
    lab, server = labs[0], servers[0]
    answer = tool(lab, host, "tcp", "0.0.0.0", lab.apiserver_address, server.port)
    # The root namespace sees the internet namespace's end of the control link.
    assert answer == {"line": f"hello {lab.plan.control.inet_address}"}


def test_second_lab_reaches_its_own_apiserver_door(
    labs: tuple[Lab, Lab], servers: list[FakeApiserver]
) -> None:
    lab, server = labs[1], servers[1]
    for host in ("node-1", "node-3", "relay"):  # node-1 is behind the TCP-only firewall
        answer = tool(lab, host, "tcp", "0.0.0.0", lab.apiserver_address, server.port)
        assert answer == {"line": f"hello {lab.plan.control.inet_address}"}
    # The first lab's server is not reachable through the second lab's door.
    answer = tool(lab, "node-3", "tcp", "0.0.0.0", lab.apiserver_address, servers[0].port)
    assert "error" in answer


def test_nothing_but_the_door_is_open(labs: tuple[Lab, Lab], servers: list[FakeApiserver]) -> None:
    lab, server = labs[0], servers[0]
    # The root side's own address, without the DNAT, is not reachable from the lab.
    answer = tool(lab, "h-pub", "tcp", "0.0.0.0", str(lab.plan.control.root_address), server.port)
    assert "error" in answer
    # The internet namespace has no default route: nothing can leave the lab.
    routes = lab.exec("internet", ["ip", "-4", "route", "show"]).stdout
    assert "default" not in routes
    unreachable = lab.exec("h-pub", ["ping", "-c", "1", "-W", "1", "192.0.2.1"], check=False)
    assert unreachable.returncode != 0


ROUTE_TYPES = {
    "local",
    "broadcast",
    "unreachable",
    "blackhole",
    "prohibit",
    "throw",
    "multicast",
    "anycast",
    "unicast",
}


def test_root_namespace_has_no_route_into_the_lab(labs: tuple[Lab, Lab]) -> None:
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for lab in labs:
        lab_nets = [ipaddress.ip_network("198.18.0.0/15")] + [r.lan_cidr for r in lab.plan.routers]
        for line in routes:
            fields = line.split()
            dst = fields[1] if fields[0] in ROUTE_TYPES else fields[0]
            if dst == "default":
                continue
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32")
            assert not any(net.overlaps(n) for n in lab_nets), line
        ours = [line.split() for line in routes if lab.plan.control.root_ifname in line]
        assert ours
        for fields in ours:
            dst = fields[1] if fields[0] in ("local", "broadcast") else fields[0]
            assert ipaddress.ip_network(dst).subnet_of(lab.plan.control.cidr), fields
