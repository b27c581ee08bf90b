"""Every NAT kind, probed from behind it: mapping, filtering, unsolicited inbound, clashes.

One lab (nat-kinds.yaml) holds a network behind each kind. The self-test
probes one fixed local port towards two STUN addresses and two ports (our
responder); Debian's coturn + turnutils_natdiscovery and the stun client,
software we did not write, must classify every router the same way.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from wirekube_lab.lab import Lab
from wirekube_lab.natbehaviour import AD, APD, EI, NONE
from wirekube_lab.selftest import SelfTestResult, run_selftest

from .conftest import NAT_KINDS_TOPOLOGY, UDPTOOL, tool

# host -> (kind, udp, tcp, mapping, filtering)
EXPECTED = {
    "h-pub": ("public", True, True, NONE, EI),
    "h-fc": ("full-cone", True, True, EI, EI),
    "h-ar": ("address-restricted", True, True, EI, AD),
    "h-pr": ("port-restricted", True, True, EI, APD),
    "h-pr-open": ("port-restricted", True, True, EI, APD),
    "h-sym": ("symmetric", True, True, APD, APD),
    "h-sym-public": ("one-to-one", True, True, EI, EI),
    "h-tcp": ("tcp-only", False, True, None, None),
}


@pytest.fixture(scope="module")
def lab(module_lab_factory: Callable[..., Lab]) -> Lab:
    return module_lab_factory(NAT_KINDS_TOPOLOGY, name="nat-kinds")


@pytest.fixture(scope="module")
def selftest(lab: Lab) -> dict[str, SelfTestResult]:
    return {r.target.host: r for r in run_selftest(lab)}


def test_build_is_fast(lab: Lab) -> None:
    assert len(lab.plan.namespaces) == 19
    assert lab.timings["build_s"] < 15, lab.timings


@pytest.mark.parametrize("host", sorted(EXPECTED))
def test_kind_behaves_as_declared(lab: Lab, selftest: dict[str, SelfTestResult], host: str) -> None:
    kind, udp, tcp, mapping, filtering = EXPECTED[host]
    result = selftest[host]
    assert result.target.kind == kind
    seen = result.behaviour
    assert seen is not None, result.problems
    assert (seen.udp, seen.tcp, seen.mapping, seen.filtering) == (udp, tcp, mapping, filtering)
    assert result.ok, result.problems
    obs = result.observations
    assert obs is not None
    if udp:
        # The fixed local port was seen by both server addresses and both ports.
        assert obs.primary is not None and obs.alt_address is not None and obs.alt_port is not None
        assert obs.primary[0] == lab.public_address(host)
        assert seen.port_preserved is (kind != "symmetric")
    else:
        assert obs.primary is None and obs.alt_address is None
    assert obs.tcp is not None and obs.tcp[0] == lab.public_address(host)


def test_public_addresses_are_what_the_internet_sees(lab: Lab) -> None:
    assert lab.public_address("h-pub") == lab.address("h-pub")
    assert lab.public_address("h-sym") == lab.address("sym-gw")
    assert lab.public_address("h-sym-public") not in (
        lab.address("sym-gw"),
        lab.address("h-sym-public"),
    )
    assert lab.router_of("h-sym") == "sym-gw"
    assert lab.router_of("peer") is None


def _coturn(lab: Lab) -> None:
    a1, a2 = lab.addresses("stun")
    d = lab.host_dir("stun")
    proc = lab.spawn(
        "stun",
        [
            "turnserver", "-n", "--stun-only", "--listening-ip", a1, "--listening-ip", a2,
            "--listening-port", "3478", "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", "stdout", "--simple-log", "--no-software-attribute",
            "--pidfile", str(d / "turnserver.pid"), "--userdb", str(d / "turndb"),
        ],
        name="coturn",
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        probe = lab.exec("peer", ["stun", a1], check=False, timeout=30)
        if "Open" in probe.stdout:
            return
        assert proc.alive, proc.log_text()
        assert time.monotonic() < deadline, proc.log_text()
        time.sleep(0.2)


# Classic names the two tools print for each kind.
NATDISCOVERY = {
    "h-pub": ("Endpoint Independent Mapping", "Endpoint Independent Filtering"),
    "h-fc": ("Endpoint Independent Mapping", "Endpoint Independent Filtering"),
    "h-ar": ("Endpoint Independent Mapping", "Address Dependent Filtering"),
    "h-pr": ("Endpoint Independent Mapping", "Address and Port Dependent Filtering"),
    "h-sym": ("Address and Port Dependent Mapping", "Address and Port Dependent Filtering"),
    "h-sym-public": ("Endpoint Independent Mapping", "Endpoint Independent Filtering"),
}
STUN_CLIENT = {
    "h-pub": "Open",
    "h-fc": "Independent Mapping, Independent Filter",
    "h-ar": "Independent Mapping, Address Dependent Filter",
    "h-pr": "Independent Mapping, Port Dependent Filter",
    "h-sym": "Dependent Mapping",
    "h-sym-public": "Independent Mapping, Independent Filter",
    "h-tcp": "Blocked",
}


def test_coturn_and_stun_client_agree(lab: Lab, selftest: dict[str, SelfTestResult]) -> None:
    assert all(r.ok for r in selftest.values())  # the responder is stopped: port 3478 is free
    _coturn(lab)
    a1 = lab.addresses("stun")[0]

    def classify(host: str) -> tuple[str, list[str], str]:
        nd = lab.exec(host, ["turnutils_natdiscovery", "-m", "-f", a1], check=False, timeout=60)
        found = re.findall(r"NAT with (.+?)!", nd.stdout)
        st = lab.exec(host, ["stun", a1], check=False, timeout=60)
        primary = re.search(r"Primary: (.+)", st.stdout)
        return host, found, primary.group(1).strip() if primary else st.stdout

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(classify, sorted(STUN_CLIENT)))
    for host, found, primary in results:
        assert STUN_CLIENT[host] in primary, (host, primary)
        if host in NATDISCOVERY:
            assert found == list(NATDISCOVERY[host]), (host, found)
        else:
            assert found == [], (host, found)  # UDP blocked: no verdict at all


POSITIVE_WAIT_S = 5.0  # returns as soon as the datagram arrives
NEGATIVE_WAIT_S = 1.0  # in-lab latency is sub-millisecond; this is only for a loaded machine


def _recv_while(
    lab: Lab, host: str, port: int, action: Callable[[], object], timeout: float = POSITIVE_WAIT_S
) -> object:
    """Listen on host:port while ``action`` runs; returns the source seen or None."""
    listener = lab.spawn(
        host,
        [sys.executable, "-u", UDPTOOL, "recv", "0.0.0.0", str(port), str(timeout)],
        name=f"recv-{port}",
    )
    listener.wait_for_log(r'"ready"', timeout=10)
    action()
    listener.wait(timeout + 10)
    line = listener.log_text().strip().splitlines()[-1]
    src = json.loads(line)["from"]
    return None if src is None else tuple(src)


def _dropped(lab: Lab, host: str, port: int, action: Callable[[], object]) -> bool:
    return _recv_while(lab, host, port, action, NEGATIVE_WAIT_S) is None


@pytest.mark.parametrize("host", ["h-ar", "h-pr", "h-sym", "h-tcp", "h-pr-open"])
def test_unsolicited_inbound_never_reaches_the_lan(lab: Lab, host: str) -> None:
    router = lab.router_of(host)
    assert router is not None
    wan = lab.address(router)
    assert _dropped(
        lab, host, 41000, lambda: tool(lab, "peer", "knock", "0.0.0.0", 5001, wan, 41000, 0.5)
    )


def test_full_cone_lets_a_new_remote_in_after_any_outbound(lab: Lab) -> None:
    wan = lab.address("fc-gw")
    peer, peer2 = lab.address("peer"), lab.address("peer-2")
    # Before any outbound packet there is no mapping: dropped.
    assert _dropped(
        lab, "h-fc", 42000, lambda: tool(lab, "peer-2", "send", "0.0.0.0", 6000, wan, 42000)
    )
    got = _recv_while(
        lab, "peer", 6000, lambda: tool(lab, "h-fc", "send", "0.0.0.0", 42000, peer, 6000)
    )
    assert got == (wan, 42000)  # port preserved
    # peer-2 was never contacted, yet reaches the host through the mapping.
    got = _recv_while(
        lab, "h-fc", 42000, lambda: tool(lab, "peer-2", "send", "0.0.0.0", 6001, wan, 42000)
    )
    assert got == (peer2, 6001)
    # flush_conntrack forgets the mapping: the same packet is dropped again.
    lab.flush_conntrack("fc-gw")
    assert _dropped(
        lab, "h-fc", 42000, lambda: tool(lab, "peer-2", "send", "0.0.0.0", 6001, wan, 42000)
    )


def test_address_restricted_admits_only_contacted_addresses(lab: Lab) -> None:
    wan = lab.address("ar-gw")
    peer = lab.address("peer")
    got = _recv_while(
        lab, "peer", 6100, lambda: tool(lab, "h-ar", "send", "0.0.0.0", 43000, peer, 6100)
    )
    assert got == (wan, 43000)
    # Same address, another port: admitted (address-dependent filtering).
    got = _recv_while(
        lab, "h-ar", 43000, lambda: tool(lab, "peer", "send", "0.0.0.0", 6199, wan, 43000)
    )
    assert got == (peer, 6199)
    # Another address: dropped.
    assert _dropped(
        lab, "h-ar", 43000, lambda: tool(lab, "peer-2", "send", "0.0.0.0", 6100, wan, 43000)
    )


@pytest.mark.parametrize(
    ("host", "icmp", "port_kept"),
    [("h-pr", "silent", True), ("h-pr-open", "icmp-unreachable", False)],
)
def test_inbound_to_router_stack_causes_a_conntrack_clash(
    lab: Lab, host: str, icmp: str, port_kept: bool
) -> None:
    """A packet that reaches the router's own stack pins the tuple: the next mapping moves."""
    router = lab.router_of(host)
    assert router is not None
    wan, peer = lab.address(router), lab.address("peer")
    # The peer "punches" first, towards the port the host will use ...
    assert tool(lab, "peer", "knock", "0.0.0.0", 6200, wan, 44000, 0.5)["result"] == icmp
    # ... then the host sends from that port to the peer.
    got = _recv_while(
        lab, "peer", 6200, lambda: tool(lab, host, "send", "0.0.0.0", 44000, peer, 6200)
    )
    assert got is not None and got[0] == wan
    assert (got[1] == 44000) is port_kept, got
