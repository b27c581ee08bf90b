"""The Lab API used by everyone else's tests: exec, spawn, ping, cut/restore, files, names."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from wirekube_lab.lab import Lab
from wirekube_lab.processes import LabCommandError

TOPOLOGY = {
    "name": "api",
    "networks": {"home": {"nat": "address-restricted"}, "vpc": {"nat": "symmetric"}},
    "hosts": {
        "n1": {"network": "home", "role": "node"},
        "n2": {"network": "home", "role": "node"},
        "n3": {"network": "vpc", "role": "node"},
        "relay": {"network": "internet", "role": "relay"},
        "stun": {"network": "internet", "role": "stun"},
    },
    "mesh": {"relay": {"mode": "auto", "provider": "external"}},
}


@pytest.fixture(scope="module")
def lab(module_lab_factory: Callable[..., Lab]) -> Lab:
    return module_lab_factory(TOPOLOGY, name="api")


def test_names_and_addresses(lab: Lab) -> None:
    assert lab.netns("n1").endswith("-n1") and lab.netns("home").endswith("-home-gw")
    assert lab.netns("internet").endswith("-internet")
    assert lab.address("n1") == "10.1.0.10"
    assert lab.public_address("n1") == lab.address("home-gw") == lab.public_address("n2")
    assert lab.addresses("stun") == ["198.18.0.11", "198.18.0.12"]
    assert lab.hosts("node") == ["n1", "n2", "n3"]
    names = [lab.wireguard_ifname(h) for h in lab.hosts()]
    assert len(set(names)) == len(names) and all(len(n) <= 15 for n in names)
    with pytest.raises(KeyError, match="no host or router 'nope'"):
        lab.netns("nope")


def test_mesh_spec_fills_lab_defaults(lab: Lab) -> None:
    spec = lab.mesh_spec()
    assert spec["stunServers"] == ["198.18.0.11:3478", "198.18.0.12:3478"]
    assert spec["relay"]["external"]["endpoint"] == f"{lab.address('relay')}:3478"
    assert "stunServers" not in lab.topology.mesh  # the topology itself is untouched


def test_exec_reports_failures(lab: Lab) -> None:
    out = lab.exec("n1", ["ip", "-4", "-o", "addr", "show", "eth0"])
    assert "10.1.0.10/24" in out.stdout
    assert lab.exec("n1", ["false"], check=False).returncode == 1
    with pytest.raises(LabCommandError, match='nosuchdev" does not exist'):
        lab.exec("n1", ["ip", "link", "show", "nosuchdev"])


def test_ping_through_nat_and_lan(lab: Lab) -> None:
    r = lab.ping("n1", "n2", count=3, interval=0.05)
    assert (r.sent, r.received) == (3, 3) and r.ok
    r = lab.ping("n1", lab.address("relay"), count=2, interval=0.05)
    assert r.ok and all(rtt < 50 for rtt in r.rtts_ms)
    # Nothing reaches a host behind a NAT from outside.
    r = lab.ping("relay", lab.public_address("n3"), count=2, interval=0.05, wait=0.3)
    assert r.received == 0


def test_cut_and_restore_a_host_and_a_router(lab: Lab) -> None:
    relay = lab.address("relay")
    lab.cut("n1")
    try:
        assert lab.ping("n1", relay, count=2, interval=0.05, wait=0.3).received == 0
        assert lab.ping("n2", relay, count=2, interval=0.05).ok  # its neighbour is fine
    finally:
        lab.restore("n1")
    assert lab.ping("n1", relay, count=2, interval=0.05).ok
    lab.cut("home-gw")
    try:
        assert lab.ping("n2", relay, count=2, interval=0.05, wait=0.3).received == 0
        assert lab.ping("n1", "n2", count=2, interval=0.05).ok  # the LAN still works
    finally:
        lab.restore("home")
    assert lab.ping("n2", relay, count=2, interval=0.05).ok


def test_spawn_logs_and_stops(lab: Lab) -> None:
    proc = lab.spawn(
        "n3", ["sh", "-c", "echo started; ip -4 -o addr show eth0; sleep 300"], name="s"
    )
    proc.wait_for_log(r"10\.2\.0\.10/24")
    assert proc.log_path == lab.workdir / "n3" / "s.log"
    again = lab.spawn("n3", ["true"], name="s")
    assert again.name == "s-2"
    assert proc.alive
    assert proc.stop() == -15
    assert not proc.alive


def test_private_wireguard_dir_lets_every_node_use_one_name(lab: Lab) -> None:
    procs = [
        lab.spawn(h, ["wireguard-go", "-f", "wire_kube"], name="wg", private_wireguard_dir=True)
        for h in ("n1", "n3")
    ]
    try:
        for proc in procs:
            deadline = time.monotonic() + 10
            while True:
                shown = proc.exec(["wg", "show", "wire_kube", "public-key"], check=False)
                if shown.returncode == 0:
                    break
                assert proc.alive, proc.log_text()
                assert time.monotonic() < deadline, shown.stderr
                time.sleep(0.05)
            sockets = proc.exec(["ls", "/run/wireguard"]).stdout.split()
            assert sockets == ["wire_kube.sock"]
        # Each tmpfs is private: the root mount namespace sees no such socket.
        assert not os.path.exists("/run/wireguard/wire_kube.sock")
        links = [
            lab.exec(h, ["ip", "-o", "link", "show", "wire_kube"]).stdout for h in ("n1", "n3")
        ]
        assert all("wire_kube" in line for line in links)
    finally:
        for proc in procs:
            proc.stop()


def test_write_etc_is_seen_by_later_processes(lab: Lab) -> None:
    lab.write_etc("n1", "hosts", f"{lab.address('relay')} relay.lab.example\n")
    # "-s files": look at /etc/hosts only (no DNS query, which could not leave the lab anyway).
    out = lab.exec("n1", ["getent", "-s", "files", "hosts", "relay.lab.example"]).stdout
    assert out.split()[0] == lab.address("relay")
    other = lab.exec("n2", ["getent", "-s", "files", "hosts", "relay.lab.example"], check=False)
    assert other.returncode != 0
