"""``wirekubectl graph``: the mesh as Graphviz DOT or Mermaid. Pure.

Nodes are grouped by network (one public address = one NAT; public nodes and
TCP-only zones apart), labelled with their NAT; pair edges are styled by path
(direct: solid, with the probe RTT; relayed: dashed; in transition: dotted;
down: red); the relay is drawn with a link to every node that relays any
pair through it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from wirekube_cli.mesh import MeshView, NodeView, PairView
from wirekube_cli.render import nat_cell
from wirekube_cli.why import relay_name

FORMATS = ("dot", "mermaid", "svg")
DOT_EDGE = {
    "direct": 'style=solid, color="#2e7d32", penwidth=2',
    "relay": 'style=dashed, color="#ef6c00"',
    "mixed": 'style=dotted, color="#00838f"',
    "down": 'style=dotted, color="#c62828"',
}
MERMAID_EDGE = {"direct": "---", "relay": "-.-", "mixed": "-.-", "down": "x--x"}
RELAY_ID = "relay"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def groups(view: MeshView) -> dict[str, list[NodeView]]:
    out: dict[str, list[NodeView]] = {}
    for n in view.nodes:
        out.setdefault(n.network, []).append(n)
    return out


def _group_label(network: str, members: Sequence[NodeView]) -> str:
    kind = nat_cell(members[0])
    if network == "public":
        return "public addresses"
    return f"{network} ({kind})"


def relayed_nodes(view: MeshView) -> list[str]:
    return sorted({n.node for n in view.nodes if any(t == "relay" for t in n.transports.values())})


def to_dot(view: MeshView, relays: Sequence[str] = ()) -> str:
    lines = [
        "graph wirekube {",
        '  graph [rankdir=LR, fontname="Helvetica", label="WireKube mesh", labelloc=t];',
        '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for i, (network, members) in enumerate(sorted(groups(view).items())):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_quote(_group_label(network, members))};")
        lines.append('    style="rounded,dashed";')
        for n in members:
            label = f"{n.node}\\n{nat_cell(n)}"
            lines.append(f'    {_quote(n.node)} [label="{label}"];')
        lines.append("  }")
    relay_label = ", ".join(relays) or relay_name(view.spec)
    through = relayed_nodes(view)
    if through or relays:
        lines.append(
            f'  {_quote(RELAY_ID)} [shape=cylinder, fillcolor="#fff3e0", label={_quote(relay_label)}];'
        )
        for name in through:
            lines.append(f'  {_quote(name)} -- {_quote(RELAY_ID)} [style=dotted, color="#bdbdbd"];')
    for p in view.pairs():
        label = _edge_label(p)
        lines.append(
            f"  {_quote(p.a.node)} -- {_quote(p.b.node)} [{DOT_EDGE[p.state]}, label={_quote(label)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_label(p: PairView) -> str:
    """A direct edge says its RTT; a relayed one says so (and its RTT)."""
    rtt = f"{p.rtt_ms:g} ms" if p.rtt_ms is not None else ""
    if p.state == "direct":
        return rtt or "direct"
    return f"{p.state} {rtt}".strip()


def _mid(name: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _mlabel(text: str) -> str:
    return text.replace('"', "'")


def to_mermaid(view: MeshView, relays: Sequence[str] = ()) -> str:
    lines = ["graph LR"]
    for i, (network, members) in enumerate(sorted(groups(view).items())):
        lines.append(f'  subgraph g{i}["{_mlabel(_group_label(network, members))}"]')
        for n in members:
            lines.append(f'    {_mid(n.node)}["{_mlabel(n.node)}<br/>{nat_cell(n)}"]')
        lines.append("  end")
    through = relayed_nodes(view)
    if through or relays:
        label = ", ".join(relays) or relay_name(view.spec)
        lines.append(f'  {_mid(RELAY_ID)}[("{_mlabel(label)}")]')
        for name in through:
            lines.append(f"  {_mid(name)} -.- {_mid(RELAY_ID)}")
    styles: list[str] = []
    for k, p in enumerate(view.pairs()):
        label = _edge_label(p)
        lines.append(f'  {_mid(p.a.node)} {MERMAID_EDGE[p.state]}|"{label}"| {_mid(p.b.node)}')
        colour = {"direct": "#2e7d32", "relay": "#ef6c00", "mixed": "#00838f", "down": "#c62828"}[
            p.state
        ]
        styles.append(f"  linkStyle {k + len(through)} stroke:{colour}")
    return "\n".join(lines + styles) + "\n"
