"""Every wirekubectl command against the live lab (conftest), checked by
structure: JSON parsed, DOT parsed for nodes and edges, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from wirekube_lab.controlplane import ControlPlane, ensure_binaries

from .conftest import WIREKUBECTL

NODES = ["node-1", "node-2", "node-5", "node-6"]


def test_up_printed_the_kubeconfig_and_what_to_try(live: Any) -> None:
    assert live.kubeconfig in live.up_output
    assert "wirekubectl paths" in live.up_output and "wirekube-lab down" in live.up_output
    assert live.state["steady"] is True


def test_status(live: Any) -> None:
    doc = live.json("status")
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert sorted(nodes) == NODES
    assert all(n["connected"] for n in nodes.values())
    assert all(n["ready"] == "True" for n in nodes.values())
    assert nodes["node-6"]["natFiltering"] == "blocked"
    assert nodes["node-2"]["natType"] == "symmetric" and nodes["node-1"]["natType"] == "cone"
    assert (nodes["node-1"]["direct"], nodes["node-1"]["relayed"]) == (2, 1)
    assert (nodes["node-6"]["direct"], nodes["node-6"]["relayed"]) == (0, 3)
    table = live.cli("status", "-o", "wide")
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:2] == ["NODE", "ENDPOINT"]
    assert [r.split()[0] for r in rows[1:]] == NODES
    assert "\033[" not in table.stdout  # not a terminal: no colour


def test_paths_matrix_in_every_format(live: Any) -> None:
    doc = live.json("paths")
    assert doc["nodes"] == NODES
    assert doc["matrix"]["node-1"]["node-2"] == doc["matrix"]["node-2"]["node-1"] == "direct"
    assert doc["matrix"]["node-2"]["node-5"] == "relay"
    assert doc["summary"] == {"direct": 2, "relay": 4}
    direct = next(p for p in doc["pairs"] if (p["a"], p["b"]) == ("node-1", "node-2"))
    assert direct["rttMs"] is not None and direct["rttMs"] > 0
    ends = direct["ends"]
    assert ends["node-1"]["reason"] == ends["node-2"]["reason"] == "probe-answered"
    as_yaml = yaml.safe_load(live.cli("paths", "-o", "yaml").stdout)
    assert as_yaml["matrix"] == doc["matrix"]
    # the same through kubectl, as its plugin kubectl-wirekube
    path = f"{Path(WIREKUBECTL).parent}:{os.environ.get('PATH', '')}"
    plugin = subprocess.run(
        [live.state["kubectl"], "wirekube", "paths", "-o", "json"],
        env=live.env(PATH=path),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert plugin.returncode == 0, plugin.stderr
    assert json.loads(plugin.stdout)["matrix"] == doc["matrix"]
    wide = live.cli("paths", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == NODES
    assert any("symmetric-symmetric" in row for row in wide) and any("tcp-only" in r for r in wide)


def _why(live: Any, a: str, b: str) -> tuple[int, dict[str, Any]]:
    done = live.cli("why", a, b, "-o", "json")
    return done.returncode, json.loads(done.stdout)


def test_why_direct_pair(live: Any) -> None:
    code, x = _why(live, "node-1", "node-2")
    assert code == 0
    assert (x["state"], x["reason"]) == ("direct", "probe-answered")
    assert x["rtt_ms"] is not None and x["would_change"]
    text = live.cli("why", "node-1", "node-2").stdout
    assert text.startswith("node-1 <-> node-2: direct") and "because:" in text


def test_why_relayed_pair(live: Any) -> None:
    code, x = _why(live, "node-2", "node-5")
    assert code == 0
    assert (x["state"], x["rule"], x["reason"]) == (
        "relay",
        "symmetric-symmetric",
        "predicted-relay",
    )
    assert x["relay"] and x["relay"].endswith(":3478")
    assert x["next_attempt_in_s"] is not None and 0 <= x["next_attempt_in_s"] <= 15
    assert any("endpoint-independent" in s for s in x["because"])
    assert x["failures"] == 0


def test_why_tcp_only_pair(live: Any) -> None:
    code, x = _why(live, "node-6", "node-2")
    assert code == 0
    assert (x["state"], x["rule"]) == ("relay", "tcp-only")
    assert any("UDP" in s for s in x["would_change"])


def test_why_unknown_node_and_usage(live: Any) -> None:
    done = live.cli("why", "node-1", "node-42")
    assert done.returncode == 6
    assert "node-42" in done.stderr and "node-1" in done.stderr and "Traceback" not in done.stderr
    assert live.cli("why", "node-1").returncode == 2
    helped = live.cli("why", "--help")
    assert helped.returncode == 0 and "NODE_A" in helped.stdout


def _dot(text: str) -> tuple[set[str], dict[frozenset[str], str]]:
    nodes = set(re.findall(r'^\s+"([^"]+)" \[(?:label|shape)=', text, re.M))
    edges = {
        frozenset((a, b)): attrs
        for a, b, attrs in re.findall(r'^\s+"([^"]+)" -- "([^"]+)" \[(.*)\];$', text, re.M)
    }
    return nodes, edges


def test_graph_dot_svg_and_mermaid(live: Any) -> None:
    dot = live.cli("graph")
    assert dot.returncode == 0
    nodes, edges = _dot(dot.stdout)
    assert nodes == {*NODES, "relay"}
    pairs = {e for e in edges if "relay" not in e}
    assert len(pairs) == 6
    assert "solid" in edges[frozenset(("node-1", "node-2"))]
    assert "dashed" in edges[frozenset(("node-2", "node-5"))]
    assert {frozenset((n, "relay")) for n in NODES} <= set(edges)  # each relays some pair
    assert dot.stdout.count("subgraph cluster_") == 4  # four networks
    svg = live.cli("graph", "--format", "svg")
    assert svg.returncode == 0
    root = ET.fromstring(svg.stdout.split("?>", 1)[-1].split("]>", 1)[-1].strip())
    assert root.tag.endswith("svg")
    titles = {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}
    assert set(NODES) <= titles
    mermaid = live.cli("graph", "--format", "mermaid").stdout
    assert mermaid.startswith("graph LR") and mermaid.count("subgraph") == 4


def test_relays_from_the_admin_api(live: Any) -> None:
    port = live.state["relay_admin_port"]
    token = live.state["relay_admin_token_file"]
    refused = live.cli("relays", "--relay-admin", f"127.0.0.1:{port}", "-o", "json", host="relay")
    assert refused.returncode == 7  # the lab's relay asks for its admin token
    assert "UNAUTHENTICATED" in json.loads(refused.stdout)["replicas"][0]["error"]
    doc = live.json(
        "relays",
        "--relay-admin",
        f"127.0.0.1:{port}",
        "--relay-admin-token-file",
        token,
        host="relay",
    )
    (replica,) = doc["replicas"]
    assert replica["ok"] is True
    assert sorted(p["node"] for p in replica["peers"]) == NODES  # keys named by their peers
    assert int(replica["stats"]["frames_forwarded"]) > 0
    assert doc["configured"] == list(live.state["relays"].values())
    closed = live.cli("relays", "--relay-admin", "127.0.0.1:1", host="relay")
    assert closed.returncode == 7 and "unreachable" in closed.stdout
    bare = live.cli("relays")
    assert bare.returncode == 0 and "--relay-admin" in bare.stdout


def test_doctor_where_the_nodes_are_and_from_outside(live: Any) -> None:
    inside = live.cli("doctor", "node-1", "-o", "json", host="node-1")
    assert inside.returncode == 0, inside.stdout
    found = json.loads(inside.stdout)["findings"]
    checks = {(f["check"], f["severity"]) for f in found}
    assert ("stun", "ok") in checks and ("relay", "ok") in checks and ("crds", "ok") in checks
    assert not [f for f in found if f["severity"] == "error"]
    # From the root namespace nothing routes to the lab: skip the network checks.
    outside = live.cli("doctor", "--no-network", "-o", "json")
    assert outside.returncode == 0
    assert not [
        f
        for f in json.loads(outside.stdout)["findings"]
        if f["check"] in ("stun", "relay") and f["severity"] == "ok"
    ]
    assert live.cli("doctor", "node-42", "--no-network").returncode == 6


def test_errors_without_kubeconfig_or_crds(live: Any, tmp_path: Any) -> None:
    env = live.env(HOME=str(tmp_path))
    del env["KUBECONFIG"]
    none = subprocess.run(
        [WIREKUBECTL, "paths"], env=env, capture_output=True, check=False, text=True, timeout=30
    )
    assert none.returncode == 3 and "kubeconfig" in none.stderr and "Traceback" not in none.stderr
    with ControlPlane(bin_dir=ensure_binaries()) as bare:  # no CRDs installed
        kept = tmp_path / "bare.kubeconfig"  # outlives the control plane's workdir
        kept.write_text(bare.kubeconfig.read_text())
        env["KUBECONFIG"] = str(kept)
        missing = subprocess.run(
            [WIREKUBECTL, "status"],
            env=env,
            capture_output=True,
            check=False,
            text=True,
            timeout=30,
        )
        assert missing.returncode == 5 and "CRDs" in missing.stderr
        doc = subprocess.run(
            [WIREKUBECTL, "doctor", "--no-network", "-o", "json"],
            env=env,
            capture_output=True,
            check=False,
            text=True,
            timeout=30,
        )
        assert doc.returncode == 1
        crds = [f for f in json.loads(doc.stdout)["findings"] if f["check"] == "crds"]
        assert crds[0]["severity"] == "error" and "kubectl apply" in crds[0]["fix"]
    # the API server is gone now
    gone = subprocess.run(
        [WIREKUBECTL, "paths"], env=env, capture_output=True, check=False, text=True, timeout=60
    )
    assert gone.returncode == 4 and "cannot reach" in gone.stderr


def test_lab_exec_runs_in_the_node_and_returns_its_status(live: Any) -> None:
    wg = live.lab("exec", "node-1", "--", "wg", "show", "wire_kube", "peers")
    assert wg.returncode == 0 and len(wg.stdout.split()) == 3  # the agent's WireGuard, 3 peers
    ip = live.lab("exec", "node-2", "--", "ip", "-4", "-o", "addr", "show")
    assert live.state["addresses"]["node-2"] in ip.stdout
    assert live.lab("exec", "node-1", "--", "sh", "-c", "exit 3").returncode == 3
    unknown = live.lab("exec", "node-42", "--", "true")
    assert unknown.returncode == 2 and "node-42" in unknown.stderr


def test_why_a_pair_whose_direct_path_was_cut(live: Any) -> None:
    """Last: it changes the lab. UDP between node-1's and node-5's public
    addresses is dropped on node-1's router; the pair falls back to the relay
    and says so, with the failure and the next attempt."""
    router = live.state["routers"]["node-1"]
    far = live.state["public_addresses"]["node-5"]
    near = live.state["public_addresses"]["node-1"]
    rules = (
        "table ip clicut {\n  chain pre {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f'    iifname "lan0" ip daddr {far} meta l4proto udp drop comment "cli test: cut (out)"\n'
        f'    iifname "wan0" ip saddr {far} ip daddr {near} meta l4proto udp drop comment "cli test: cut (in)"\n'
        "  }\n}\n"
    )
    assert live.lab("exec", router, "--", "nft", "-f", "-", input=rules).returncode == 0
    seen: dict[str, Any] = {}

    def fell_back() -> bool:
        seen.update(_why(live, "node-1", "node-5")[1])
        return seen["state"] == "relay" and seen["reason"] == "direct-failed"

    live.wait("node-1 <-> node-5 on the relay after a direct failure", fell_back, timeout=45)
    assert seen["failures"] >= 1
    assert seen["next_attempt_in_s"] is not None and seen["next_attempt_in_s"] <= 15
    assert any("drops UDP" in s for s in seen["would_change"])
    # the change is an Event on the agents' own WireKubePeers
    live.wait(
        "a PathChanged event",
        lambda: any("direct -> relay" in h for h in _why(live, "node-1", "node-5")[1]["history"]),
        timeout=20,
    )
