"""The health probes against real sockets: TCP on loopback, ICMP through a
lab network (raw sockets where ping sockets are not allowed, ping sockets
where net.ipv4.ping_group_range allows them)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from typing import Any

from wirekube_common.gwhealth.probe import icmp_probe, probe, tcp_probe
from wirekube_common.gwhealth.target import parse_target
from wirekube_lab.lab import Lab

PROBE_SCRIPT = """
import asyncio, json, sys
from wirekube_common.gwhealth.probe import probe
from wirekube_common.gwhealth.target import parse_target
r = asyncio.run(probe(parse_target(sys.argv[1]), float(sys.argv[2])))
print(json.dumps({"ok": r.ok, "detail": r.detail, "rtt": r.rtt_s}))
"""


def test_tcp_connect_ok_and_refused_on_loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        ok = asyncio.run(tcp_probe("127.0.0.1", port, 2.0))
        assert ok.ok and ok.rtt_s is not None and ok.rtt_s < 1.0, ok
        via_target = asyncio.run(probe(parse_target(f"127.0.0.1:{port}"), 2.0))
        assert via_target.ok
    refused = asyncio.run(tcp_probe("127.0.0.1", port, 2.0))  # listener gone
    assert not refused.ok and "refused" in refused.detail.lower(), refused


def test_icmp_on_loopback() -> None:
    # As root: a ping socket if ping_group_range allows gid 0, else a raw one.
    result = asyncio.run(icmp_probe("127.0.0.1", 2.0))
    assert result.ok, result


def run_probe(lab: Lab, host: str, target: str, timeout: float = 1.0) -> dict[str, Any]:
    out = lab.exec(host, [sys.executable, "-c", PROBE_SCRIPT, target, str(timeout)]).stdout
    return dict(json.loads(out))


def test_probes_inside_a_lab_network(lab_factory: Any) -> None:
    lab = lab_factory(
        {
            "name": "gwprobe",
            "networks": {"lan": {"nat": {"kind": "port-restricted"}}},
            "hosts": {"a": {"network": "lan"}, "b": {"network": "lan"}, "t": {"network": "lan"}},
        }
    )
    target = lab.address("t")
    # "b" allows ping sockets for every group; "a" keeps the namespace default
    # (none), so it must fall back to a raw socket.
    lab.exec("b", ["sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647"])
    assert lab.exec("a", ["sysctl", "-n", "net.ipv4.ping_group_range"]).stdout.split() == ["1", "0"]

    raw = run_probe(lab, "a", target)
    ping = run_probe(lab, "b", target)
    assert raw["ok"] and "(raw socket)" in raw["detail"], raw
    assert ping["ok"] and "(ping socket)" in ping["detail"], ping

    # Echo requests dropped on the way (at the target): a timeout, within the deadline.
    lab.exec("t", ["iptables", "-I", "INPUT", "-p", "icmp", "-s", lab.address("a"), "-j", "DROP"])
    lost = run_probe(lab, "a", target, timeout=1.0)
    assert not lost["ok"] and "no reply within 1s" in lost["detail"], lost
    # A local firewall refusing to send: a failure that says so.
    lab.exec("b", ["iptables", "-I", "OUTPUT", "-p", "icmp", "-d", target, "-j", "DROP"])
    blocked = run_probe(lab, "b", target, timeout=1.0)
    assert not blocked["ok"] and "Operation not permitted" in blocked["detail"], blocked

    # TCP: nothing listens yet (refused), then a listener (ok), then dropped SYNs (timeout).
    refused = run_probe(lab, "b", f"{target}:8443")
    assert not refused["ok"] and "refused" in refused["detail"].lower(), refused
    lab.spawn("t", [sys.executable, "-m", "http.server", "8443", "--bind", "0.0.0.0"], name="http")
    ok = _eventually(lambda: run_probe(lab, "b", f"{target}:8443"))
    assert ok["ok"], ok
    lab.exec("t", ["iptables", "-I", "INPUT", "-p", "tcp", "-s", lab.address("b"), "-j", "DROP"])
    slow = run_probe(lab, "b", f"{target}:8443", timeout=1.0)
    assert not slow["ok"] and "timed out after 1s" in slow["detail"], slow


def _eventually(fn: Any, tries: int = 20) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for _ in range(tries):
        result = fn()
        if result["ok"]:
            return result
        time.sleep(0.25)
    return result
