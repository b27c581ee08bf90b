"""``wirekube-lab run TOPOLOGY.yaml --json``: the README's main command, and its pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab import netops
from wirekube_lab.fixtures.lab import TOPOLOGY_DIR, topology_path
from wirekube_lab.lab import Lab
from wirekube_lab.pipeline import NoMesh, run
from wirekube_lab.report import EXIT_FAILED, EXIT_OK, document, exit_code
from wirekube_lab.selftest import run_selftest
from wirekube_lab.topology import load_topology

CLI = [sys.executable, "-m", "wirekube_lab"]
SHIPPED = sorted(TOPOLOGY_DIR.glob("topology-*.yaml"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=240, check=False)


def test_run_json(tmp_path: Path) -> None:
    proc = cli("run", str(topology_path("topology-2-mixed")), "--json", "--workdir", str(tmp_path))
    assert proc.returncode == EXIT_OK, (proc.stderr, proc.stdout[-3000:])
    doc = json.loads(proc.stdout)
    assert {"ok", "topology", "nat_selftest", "paths", "pings", "mesh", "timings"} <= set(doc)
    assert doc["ok"] is True
    topo = doc["topology"]
    assert topo["name"] == "topology-2-mixed"
    assert topo["apiserver_address"] == "100.64.0.1"
    assert {h["name"] for h in topo["hosts"]} == {"node-1", "node-2", "node-3", "relay", "stun"}
    assert topo["expect_paths"] == {
        "node-1/node-2": "direct",
        "node-1/node-3": "relay",
        "node-2/node-3": "direct",
    }
    kinds = sorted((r["network"], r["kind"], r["host"], r["ok"]) for r in doc["nat_selftest"])
    assert kinds == [
        ("vpc-a", "one-to-one", "node-2", True),
        ("vpc-a", "symmetric", "node-1", True),
        ("vpc-b", "symmetric", "node-3", True),
    ]
    # The default driver runs the real system: its own control plane, relay,
    # stun-probe and agents; the path table must be the seed's.
    assert doc["mesh"]["driver"] == "wirekube" and doc["mesh"]["steady"] is True
    assert {pair: p["mode"] for pair, p in doc["paths"].items()} == topo["expect_paths"]
    for src, row in doc["pings"].items():
        for dst, result in row.items():
            assert result["received"] == result["sent"] > 0, (src, dst, result)
    for key in ("sweep_s", "build_s", "selftest_s", "services_s", "teardown_s", "total_s"):
        assert key in doc["timings"]
    assert doc["timings"]["build_s"] < 15
    # Torn down, logs kept in the workdir.
    assert not [n for n in netops.list_namespaces() if f"-{topo['run']}-" in n]
    assert (tmp_path / "stun" / "selftest-responder.log").exists()


def test_run_text(tmp_path: Path) -> None:
    proc = cli(
        "run",
        str(topology_path("topology-5-air-gapped-tcp")),
        "--workdir",
        str(tmp_path),
        "--driver",
        "wirekube_lab.pipeline:NoMesh",  # the network and its self-test alone
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    out = proc.stdout
    assert "NAT self-test" in out and "tcp-only" in out and "PASS" in out
    assert "timings:" in out and "build_s" in out
    assert out.rstrip().endswith("RESULT: ok")


def test_bad_topology_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  a: {network: nowhere}\n")
    proc = cli("run", str(bad), "--json")
    assert proc.returncode == 2
    assert "hosts.a.network: unknown network 'nowhere'" in proc.stderr
    assert cli("validate", str(tmp_path / "missing.yaml")).returncode == 2


def test_validate_prints_the_plan() -> None:
    proc = cli("validate", str(topology_path("topology-4-home-lab-cloud")), "--json")
    assert proc.returncode == 0
    plan = json.loads(proc.stdout)
    node3 = next(h for h in plan["hosts"] if h["name"] == "node-3")
    assert node3["public_address"].startswith("198.18.2.")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_topology_builds_and_passes_its_selftest(path: Path, tmp_path: Path) -> None:
    ctx = run(load_topology(path), workdir=tmp_path)
    assert ctx.nat_selftest, ctx.selftest_error
    bad = [(r.target.network, r.problems) for r in ctx.nat_selftest if not r.ok]
    assert bad == []
    assert ctx.timings["teardown_s"] < 15


class WrongPaths(NoMesh):
    """A driver that reports every pair as relay: the run must fail against expect.paths."""

    name = "wrong-paths"

    def paths(self, lab: Lab) -> dict[str, str] | None:
        nodes = lab.hosts("node")
        return {f"{a}/{b}": "relay" for i, a in enumerate(nodes) for b in nodes[i + 1 :]}


def _doc(ctx: Any, driver: NoMesh) -> dict[str, Any]:
    return document(
        topology=ctx.topology,
        described=ctx.described,
        nat_selftest=[r.to_json() for r in ctx.nat_selftest],
        selftest_note=ctx.selftest_error,
        driver=driver.name,
        driver_note=None,
        steady=ctx.steady,
        paths=ctx.paths,
        pings=ctx.pings,
        timings=ctx.timings,
    )


def test_a_path_differing_from_the_expectation_fails_the_run(tmp_path: Path) -> None:
    driver = WrongPaths()
    ctx = run(
        load_topology(topology_path("topology-1-all-private")),
        driver=driver,
        workdir=tmp_path,
        selftest=False,
    )
    doc = _doc(ctx, driver)
    assert doc["paths"]["node-1/node-2"] == {"mode": "relay", "expected": "direct"}
    assert exit_code(doc) == EXIT_FAILED


def test_the_selftest_catches_a_misbehaving_router(lab_factory: Any) -> None:
    lab = lab_factory(
        {
            "networks": {"home": {"nat": "address-restricted"}},
            "hosts": {
                "n": {"network": "home", "role": "node"},
                "stun": {"network": "internet", "role": "stun"},
            },
        }
    )
    # Sabotage: drop the "contacted" check, so the router behaves like a full cone.
    lab.exec("home-gw", ["nft", "flush", "chain", "ip", "wklab", "prerouting"])
    lab.exec(
        "home-gw",
        ["nft", "add", "rule", "ip", "wklab", "prerouting", "iifname", "wan0", "meta", "l4proto", "udp",
         "dnat", "ip", "to", "udp", "dport", "map", "@udp_mappings"],
    )  # fmt: skip
    (result,) = run_selftest(lab)
    assert not result.ok
    assert result.problems == ("filtering endpoint-independent, expected address-dependent",)
