"""STUN from the WireGuard listen port while wireguard-go owns it (raw sockets).

Topology, in namespaces this test creates (prefix ``wkh4<n>``)::

    host 10.77.1.2 ── 10.77.1.1 rtr 203.0.113.1 ── 203.0.113.10/.11 pub
    (wireguard-go :51820,        MASQUERADE         (wirekube-stun-probe RFC 5780,
     tunnel 10.99.0.1)          (port-preserving)    wireguard-go :51820, 10.99.0.2)
    fd00:77:1::2 ────────────── fd00:77:1::1 / fd00:77:2::1 ─ fd00:77:2::10 (IPv6 routed, no NAT)

What it shows:

* the raw-socket probe from port 51820 reports the NAT mapping of WireGuard's
  own port: exactly the endpoint the public WireGuard peer sees for the host;
  an ordinary socket on another port gets a different mapping;
* port-preserving MASQUERADE classifies as cone / endpoint-independent
  mapping / address-and-port-dependent filtering;
* the tunnel keeps working during probes: a ping through it loses nothing,
  and wireguard-go treats our STUN replies as junk (its verbose log says
  "unknown type") without touching the session;
* IPv6: the raw IPv6 socket (kernel-filled checksum, BPF on the UDP header)
  gets the same answers.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

WG_PORT = 51820


def sh(*argv: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}{out.stdout}")
    return out.stdout


@dataclass
class Net:
    tag: str
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"{self.tag}-host"

    @property
    def rtr(self) -> str:
        return f"{self.tag}-rtr"

    @property
    def pub(self) -> str:
        return f"{self.tag}-pub"

    @property
    def wg_host(self) -> str:
        return f"{self.tag}h"

    @property
    def wg_pub(self) -> str:
        return f"{self.tag}p"

    def spawn(self, ns: str, *argv: str, log: str, env: dict[str, str] | None = None) -> None:
        fh = (self.tmp / log).open("wb")
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(p)


def _build(net: Net) -> None:
    t = net.tag
    for ns in (net.host, net.rtr, net.pub):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh(
        "ip",
        "link",
        "add",
        f"{t}a",
        "netns",
        net.host,
        "type",
        "veth",
        "peer",
        f"{t}b",
        "netns",
        net.rtr,
    )
    sh(
        "ip",
        "link",
        "add",
        f"{t}c",
        "netns",
        net.rtr,
        "type",
        "veth",
        "peer",
        f"{t}d",
        "netns",
        net.pub,
    )
    plan = [
        (net.host, f"{t}a", ["10.77.1.2/24"], ["fd00:77:1::2/64"]),
        (net.rtr, f"{t}b", ["10.77.1.1/24"], ["fd00:77:1::1/64"]),
        (net.rtr, f"{t}c", ["203.0.113.1/24"], ["fd00:77:2::1/64"]),
        (net.pub, f"{t}d", ["203.0.113.10/24", "203.0.113.11/24"], ["fd00:77:2::10/64"]),
    ]
    for ns, dev, v4, v6 in plan:
        for a in v4:
            sh("ip", "addr", "add", a, "dev", dev, ns=ns)
        for a in v6:
            sh("ip", "-6", "addr", "add", a, "dev", dev, "nodad", ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
    sh("ip", "route", "add", "default", "via", "10.77.1.1", ns=net.host)
    sh("ip", "-6", "route", "add", "default", "via", "fd00:77:1::1", ns=net.host)
    sh("ip", "-6", "route", "add", "default", "via", "fd00:77:2::1", ns=net.pub)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=net.rtr)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=net.rtr)
    # Linux MASQUERADE: endpoint-independent mapping that keeps the source port
    # when it is free, address-and-port-dependent filtering (conntrack).
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", f"{t}c", "-j", "MASQUERADE", ns=net.rtr)
    # Like a home router: nothing unsolicited from the WAN reaches the LAN.
    sh(
        "iptables",
        "-A",
        "FORWARD",
        "-i",
        f"{t}c",
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "DROP",
        ns=net.rtr,
    )


def _wireguard(net: Net) -> None:
    keys = {}
    for side in ("host", "pub"):
        priv = sh("wg", "genkey").strip()
        pub = subprocess.run(
            ["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True
        ).stdout.strip()
        (net.tmp / f"{side}.key").write_text(priv + "\n")
        keys[side] = pub
    for side, ns, dev, addr in (
        ("host", net.host, net.wg_host, "10.99.0.1/24"),
        ("pub", net.pub, net.wg_pub, "10.99.0.2/24"),
    ):
        net.spawn(
            ns,
            "wireguard-go",
            "-f",
            dev,
            log=f"wg-{side}.log",
            env={"LOG_LEVEL": "verbose", "WG_PROCESS_FOREGROUND": "1"},
        )
        deadline = time.monotonic() + 15
        while not Path(f"/var/run/wireguard/{dev}.sock").exists():
            assert time.monotonic() < deadline, f"wireguard-go {dev} did not start"
            time.sleep(0.1)
        sh(
            "wg",
            "set",
            dev,
            "listen-port",
            str(WG_PORT),
            "private-key",
            str(net.tmp / f"{side}.key"),
            ns=ns,
        )
        sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
    sh(
        "wg",
        "set",
        net.wg_host,
        "peer",
        keys["pub"],
        "allowed-ips",
        "10.99.0.2/32",
        "endpoint",
        f"203.0.113.10:{WG_PORT}",
        "persistent-keepalive",
        "1",
        ns=net.host,
    )
    sh("wg", "set", net.wg_pub, "peer", keys["host"], "allowed-ips", "10.99.0.1/32", ns=net.pub)


def _teardown(net: Net) -> None:
    for p in net.procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    for ns in (net.host, net.rtr, net.pub):
        sh("ip", "netns", "del", ns, check=False)
    for dev in (net.wg_host, net.wg_pub):
        with contextlib.suppress(FileNotFoundError):
            Path(f"/var/run/wireguard/{dev}.sock").unlink()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    # Interface names are global to /var/run/wireguard and must fit 15 chars.
    n = Net(f"wkh4{os.getpid() % 100000}", tmp_path_factory.mktemp("rawudp"))
    try:
        _build(n)
        n.spawn(
            n.pub,
            sys.executable,
            "-m",
            "wirekube_stunprobe",
            "--address",
            "203.0.113.10",
            "--alternate-address",
            "203.0.113.11",
            "--also-listen",
            "fd00:77:2::10",
            "--health-address",
            "",
            "--metrics-port",
            "0",
            "--log-format",
            "text",
            log="stun-probe.log",
        )
        _wireguard(n)
        _wait_ping(n, "10.99.0.2", 20)
        yield n
    finally:
        _teardown(n)


def _wait_ping(net: Net, target: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ip", "netns", "exec", net.host, "ping", "-c1", "-W1", target],
            capture_output=True,
            check=False,
        )
        if out.returncode == 0:
            return
    raise AssertionError(f"no ping to {target} through the tunnel")


def _wg_endpoint_seen_by_pub(net: Net) -> str:
    out = sh("wg", "show", net.wg_pub, "endpoints", ns=net.pub)
    return out.split()[1]


def test_raw_probe_reports_the_wireguard_ports_mapping(net: Net, probe_cli) -> None:  # type: ignore[no-untyped-def]
    seen_by_peer = _wg_endpoint_seen_by_pub(net)
    assert seen_by_peer == f"203.0.113.1:{WG_PORT}"  # port-preserving MASQUERADE
    out = probe_cli(
        "--server", "203.0.113.10:3478", "--raw-port", str(WG_PORT), "--rto", "0.2", netns=net.host
    )
    print(out)
    assert out["mapped"] == seen_by_peer
    assert (out["natType"], out["natMapping"], out["natFiltering"]) == (
        "cone",
        "endpoint-independent",
        "address-and-port-dependent",
    )
    # An ordinary socket (another local port) gets another mapping: the raw
    # socket is what makes the published endpoint WireGuard's own.
    plain = probe_cli(
        "--server", "203.0.113.10:3478", "--no-filtering", "--rto", "0.2", netns=net.host
    )
    assert plain["mapped"] != seen_by_peer and plain["mapped"].startswith("203.0.113.1:")


def test_tunnel_unaffected_by_probes(net: Net, probe_cli) -> None:  # type: ignore[no-untyped-def]
    before = sh("wg", "show", net.wg_host, "transfer", ns=net.host).split()
    ping = subprocess.Popen(
        ["ip", "netns", "exec", net.host, "ping", "-i", "0.05", "-c", "80", "-W", "1", "10.99.0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    probes = [
        probe_cli(
            "--server",
            "203.0.113.10:3478",
            "--raw-port",
            str(WG_PORT),
            "--rto",
            "0.2",
            netns=net.host,
        )
        for _ in range(4)
    ]
    out, _ = ping.communicate(timeout=60)
    print(out.splitlines()[-2])
    assert all(p["mapped"] == f"203.0.113.1:{WG_PORT}" for p in probes)
    assert re.search(r"80 packets transmitted, 80 received, 0% packet loss", out), out
    after = sh("wg", "show", net.wg_host, "transfer", ns=net.host).split()
    assert int(after[1]) > int(before[1])  # the pings went through WireGuard
    # wireguard-go saw our STUN replies on its socket and dropped them as junk.
    log = (net.tmp / "wg-host.log").read_text(errors="replace")
    assert "unknown type" in log.lower(), log[-2000:]
    assert _wg_endpoint_seen_by_pub(net) == f"203.0.113.1:{WG_PORT}"


def test_raw_probe_ipv6(net: Net, probe_cli) -> None:  # type: ignore[no-untyped-def]
    out = probe_cli(
        "--server",
        "[fd00:77:2::10]:3478",
        "--raw-port",
        str(WG_PORT),
        "--ipv6",
        "--no-filtering",
        "--rto",
        "0.2",
        netns=net.host,
    )
    print(out)
    assert out["mapped"] == f"[fd00:77:1::2]:{WG_PORT}"
    assert (out["natType"], out["natMapping"]) == ("cone", "none")
