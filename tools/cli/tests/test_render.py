"""Rendering and explanations from a fixed mesh: structure, not exact text."""

from __future__ import annotations

import json
import re

import yaml

from wirekube_cli import doctor, graph, render, why
from wirekube_cli.mesh import build
from wirekube_cli.term import Style

from .fixtures import NOW, mesh_objects


def view(cut: bool = False):  # type: ignore[no-untyped-def]
    return build(*mesh_objects(cut))


def test_pairs_are_read_from_both_ends() -> None:
    v = view()
    states = {(p.a.node, p.b.node): p.state for p in v.pairs()}
    assert states[("cloud-2", "home-1")] == "direct"
    assert states[("cloud-2", "cloud-5")] == "relay"
    assert states[("cloud-5", "zone-6")] == "relay"
    assert v.pair("home-1", "cloud-2").rtt_ms == 1.5
    assert v.pair("node-home-1", "cloud-5").state == "direct"  # peer names work too


def test_status_and_paths_documents() -> None:
    v = view()
    status = render.status_doc(v, NOW)
    by = {n["node"]: n for n in status["nodes"]}
    assert (by["home-1"]["direct"], by["home-1"]["relayed"]) == (2, 1)
    assert by["zone-6"]["natFiltering"] == "blocked"
    assert by["home-1"]["lastHandshakeAgeSeconds"] == 30
    doc = render.paths_doc(v)
    assert doc["matrix"]["home-1"]["cloud-2"] == "direct"
    assert doc["matrix"]["cloud-2"]["cloud-5"] == "relay"
    assert doc["matrix"]["home-1"]["home-1"] is None
    assert doc["summary"] == {"direct": 2, "relay": 4}
    assert yaml.safe_load(render.dump(doc, "yaml")) == json.loads(render.dump(doc, "json"))


def test_tables_have_one_row_per_node_and_colour_only_when_asked() -> None:
    v = view()
    plain = render.paths_table(v)
    assert "\033[" not in plain
    rows = plain.splitlines()
    assert rows[0].split() == ["cloud-2", "cloud-5", "home-1", "zone-6"]
    assert len([r for r in rows[1:] if r.split() and r.split()[0] in {"cloud-2", "home-1"}]) == 2
    coloured = render.paths_table(v, Style(True))
    assert "\033[32m" in coloured and re.sub(r"\033\[[0-9;]*m", "", coloured) == plain
    wide = render.status_table(v, NOW, wide=True)
    assert len(wide.splitlines()) == 1 + 4 and "tcp-only" in wide


def test_why_direct_relayed_tcp_only_and_cut() -> None:
    v = view()
    d = why.explain(v.pair("home-1", "cloud-2"), v.spec, NOW)
    assert (d.state, d.rule, d.reason, d.rtt_ms) == (
        "direct",
        "cone-symmetric",
        "probe-answered",
        1.5,
    )
    assert "cloud-2 is behind a symmetric NAT" in " ".join(d.because)
    r = why.explain(v.pair("cloud-2", "cloud-5"), v.spec, NOW)
    assert (r.state, r.rule, r.reason) == ("relay", "symmetric-symmetric", "predicted-relay")
    assert any("endpoint-independent mapping" in s for s in r.because)
    assert any("public endpoint" in s for s in r.would_change)
    # the published next attempt is 5 s past: carried forward by the 15 s interval
    assert r.next_attempt_in_s == 10.0
    t = why.explain(v.pair("zone-6", "home-1"), v.spec, NOW)
    assert (t.state, t.rule) == ("relay", "tcp-only")
    assert any("UDP" in s for s in t.would_change)
    cut = build(*mesh_objects(cut=True))
    c = why.explain(cut.pair("home-1", "cloud-2"), cut.spec, NOW)
    assert (c.state, c.reason, c.failures, c.next_attempt_in_s) == (
        "relay",
        "direct-failed",
        1,
        74.0,
    )
    assert "next direct attempt in 74 s" in c.summary
    assert any("drops UDP" in s for s in c.would_change)
    text = why.render(c)
    assert text.startswith("home-1 <-> cloud-2: relayed") and "what would change it:" in text


def test_why_history_comes_from_path_changed_events() -> None:
    events = [
        {
            "reason": "PathChanged",
            "message": "node-cloud-2: direct -> relay (rule x)",
            "lastTimestamp": "2026-05-28T20:00:00Z",
            "involvedObject": {"name": "node-home-1"},
        },
        {
            "reason": "PathChanged",
            "message": "node-zone-6: direct -> relay",
            "lastTimestamp": "2026-05-28T20:00:01Z",
            "involvedObject": {"name": "node-home-1"},
        },
        {
            "reason": "InvalidPeer",
            "message": "node-cloud-2: bad",
            "lastTimestamp": "2026-05-28T20:00:02Z",
        },
    ]
    got = why.pair_events(events, [], "node-home-1", "node-cloud-2")
    assert [m for _, m in got] == ["node-home-1 -> node-cloud-2: direct -> relay (rule x)"]


def _dot_structure(text: str) -> tuple[set[str], dict[frozenset[str], str], int]:
    nodes = set(re.findall(r'^\s+"([^"]+)" \[label=', text, re.M))
    edges = {
        frozenset((a, b)): attrs
        for a, b, attrs in re.findall(r'^\s+"([^"]+)" -- "([^"]+)" \[(.*)\];$', text, re.M)
    }
    clusters = len(re.findall(r"subgraph cluster_", text))
    return nodes, edges, clusters


def test_graph_dot_groups_networks_styles_paths_and_draws_the_relay() -> None:
    v = view()
    text = graph.to_dot(v)
    assert text.startswith("graph wirekube {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes, edges, clusters = _dot_structure(text)
    assert nodes == {"home-1", "cloud-2", "cloud-5", "zone-6"}
    assert clusters == 4  # one public address each, the TCP-only zone apart
    assert "solid" in edges[frozenset(("home-1", "cloud-2"))]
    assert "dashed" in edges[frozenset(("cloud-2", "cloud-5"))]
    assert frozenset(("zone-6", "relay")) in edges
    assert frozenset(("home-1", "cloud-5")) in edges and frozenset(("home-1", "relay")) in edges
    mermaid = graph.to_mermaid(v)
    assert mermaid.startswith("graph LR")
    assert mermaid.count("subgraph") == mermaid.count("\n  end") == 4
    assert re.search(r"n_cloud_2 ---\|\"1.5 ms\"\| n_home_1", mermaid)
    assert re.search(r"n_cloud_2 -\.-\|\"relay 12 ms\"\| n_cloud_5", mermaid)
    assert v.pair("cloud-2", "cloud-5").rtt_ms == 12.0  # the RTT through the relay
    assert mermaid.count("linkStyle") == 6


def test_doctor_findings_each_with_a_fix() -> None:
    v = view()
    probes = doctor.ProbeResults(
        stun={"198.18.0.3:3478": None}, relay={"198.18.0.2:3478": "Connection refused"}, skew_s=12.0
    )
    found = doctor.findings(v, probes, NOW)
    kinds = {(f.check, f.severity) for f in found}
    assert ("stun", "ok") in kinds and ("relay", "error") in kinds and ("clock", "warning") in kinds
    lonely = [f for f in found if f.subject == "node lonely-7"]
    assert lonely and lonely[0].severity == "error" and "nodeName=lonely-7" in lonely[0].fix
    assert all(f.fix for f in found if f.severity in ("warning", "error"))
    assert doctor.exit_problems(found)
    only = doctor.findings(v, doctor.ProbeResults(), NOW, node="home-1")
    assert not [f for f in only if "lonely-7" in f.subject]
    dup_objects = mesh_objects()
    dup_objects[0][1]["spec"]["publicKey"] = dup_objects[0][0]["spec"]["publicKey"]
    dup = doctor.findings(build(*dup_objects), doctor.ProbeResults(), NOW)
    assert any(f.check == "duplicates" and f.severity == "error" for f in dup)
    text = doctor.render(found)
    assert "fixes:" in text and text.rstrip().endswith("warnings")


def test_unknown_node_names_the_known_ones() -> None:
    import pytest  # noqa: PLC0415

    from wirekube_cli.mesh import UnknownNode  # noqa: PLC0415

    with pytest.raises(UnknownNode, match="home-1"):
        view().pair("nope", "home-1")


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io  # noqa: PLC0415

    from wirekube_cli.term import colour_enabled  # noqa: PLC0415

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not colour_enabled(io.StringIO())
    assert colour_enabled(Tty())
    assert not colour_enabled(Tty(), flag=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_enabled(Tty())


def test_managed_relay_endpoint_from_its_service() -> None:
    assert doctor.managed_endpoint(None, 3478)[0] is None
    lb = {
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
    }
    assert doctor.managed_endpoint(lb, 3478) == ("203.0.113.9:3478", "")
    pending = {"spec": {"type": "LoadBalancer"}}
    assert doctor.managed_endpoint(pending, 3478)[1].startswith("the managed relay Service has no")
    assert doctor.managed_endpoint({"spec": {"type": "NodePort"}}, 3478) == (None, "")
    external = {"spec": {"type": "ClusterIP", "externalIPs": ["198.51.100.4"]}}
    assert doctor.managed_endpoint(external, 4000) == ("198.51.100.4:4000", "")
