"""Text out of data: tables for ``status`` and ``paths``, and the documents
``-o json|yaml`` print. Pure (``now`` is an argument), so what a user reads is
unit-tested; colour comes in through a ``Style`` and never changes widths."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from wirekube_cli.mesh import MeshView, NodeView, PairView
from wirekube_cli.term import PATH_COLOURS, PLAIN, Style
from wirekube_cli.why import ago, ts

OUTPUTS = ("table", "wide", "json", "yaml")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], style: Style = PLAIN,
          colours: Sequence[Sequence[str | None]] | None = None) -> str:  # fmt: skip
    """Columns padded to their widest cell; colour applied after padding."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    last = len(headers) - 1
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            padded = cell if i == last else cell.ljust(widths[i])
            colour = colours[r][i] if colours else None
            cells.append(style(padded, colour) if colour else padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def dump(doc: Any, output: str) -> str:
    if output == "yaml":
        return str(yaml.safe_dump(doc, sort_keys=False))
    return json.dumps(doc, indent=2) + "\n"


# -- status ---------------------------------------------------------------------------------
def nat_cell(n: NodeView) -> str:
    if n.nat_mapping == "none":
        return "public"
    if n.nat_filtering == "blocked":
        return "tcp-only"
    if not n.nat_type:
        return "unknown"
    short = {
        "endpoint-independent": "open",
        "address-dependent": "addr",
        "address-and-port-dependent": "port",
    }
    return f"{n.nat_type}/{short.get(n.nat_filtering, n.nat_filtering or '?')}"


def status_doc(view: MeshView, now: float) -> dict[str, Any]:
    nodes = []
    for n in view.nodes:
        hs = ts(n.last_handshake)
        nodes.append(
            {
                "node": n.node,
                "peer": n.peer,
                "endpoint": n.endpoint,
                "discovery": n.discovery,
                "natType": n.nat_type,
                "natMapping": n.nat_mapping,
                "natFiltering": n.nat_filtering,
                "publicIP": n.public_ip,
                "direct": n.direct,
                "relayed": n.relayed,
                "peers": len(n.transports),
                "connected": n.connected,
                "lastHandshake": n.last_handshake,
                "lastHandshakeAgeSeconds": round(now - hs, 1) if hs else None,
                "medianRttMs": n.median_rtt_ms,
                "ready": (n.ready or {}).get("status"),
                "readyReason": (n.ready or {}).get("reason"),
            }
        )
    return {"nodes": nodes, "invalidPeers": [{"name": a, "error": b} for a, b in view.invalid]}


def status_table(view: MeshView, now: float, style: Style = PLAIN, wide: bool = False) -> str:
    headers = ["NODE", "ENDPOINT", "VIA", "NAT", "DIRECT", "RELAYED", "HANDSHAKE", "RTT", "READY"]
    if wide:
        headers += ["PUBLIC IP", "MAPPING", "FILTERING", "REASON"]
    rows, colours = [], []
    total = len(view.nodes) - 1
    for n in view.nodes:
        hs = ts(n.last_handshake)
        ready = (n.ready or {}).get("status", "?")
        row = [
            n.node,
            n.endpoint or "-",
            n.discovery or "-",
            nat_cell(n),
            f"{n.direct}/{total}",
            f"{n.relayed}/{total}",
            f"{ago(now - hs)} ago" if hs else "never",
            f"{n.median_rtt_ms} ms" if n.median_rtt_ms is not None else "-",
            str(ready),
        ]
        if wide:
            row += [
                n.public_ip or "-",
                n.nat_mapping or "-",
                n.nat_filtering or "-",
                str((n.ready or {}).get("reason", "-")),
            ]
        rows.append(row)
        colour: list[str | None] = [None] * len(row)
        colour[8] = "green" if ready == "True" else "red"
        colours.append(colour)
    text = table(headers, rows, style, colours)
    for name, error in view.invalid:
        text += style(f"invalid WireKubePeer {name}: {error}\n", "red")
    return text


# -- paths ------------------------------------------------------------------------------------
def pair_doc(p: PairView) -> dict[str, Any]:
    def end(path: Any, transport: str | None) -> dict[str, Any] | None:
        if path is None and transport is None:
            return None
        d: dict[str, Any] = {"transport": transport}
        if path is not None:
            d.update(path.to_dict())
            d["transport"] = transport
        return d

    return {
        "a": p.a.node,
        "b": p.b.node,
        "path": p.state,
        "rttMs": p.rtt_ms,
        "rule": next((x.rule for x in (p.a_path, p.b_path) if x is not None), None),
        "ends": {p.a.node: end(p.a_path, p.a_transport), p.b.node: end(p.b_path, p.b_transport)},
    }


def paths_doc(view: MeshView) -> dict[str, Any]:
    pairs = view.pairs()
    matrix = {
        a.node: {
            b.node: (view.pair(a.node, b.node).state if a is not b else None) for b in view.nodes
        }
        for a in view.nodes
    }
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.state] = counts.get(p.state, 0) + 1
    return {
        "nodes": [n.node for n in view.nodes],
        "matrix": matrix,
        "pairs": [pair_doc(p) for p in pairs],
        "summary": counts,
    }


def cell(p: PairView, wide: bool) -> str:
    text: str = p.state
    if p.rtt_ms is not None:
        text += f" {p.rtt_ms:g}ms"
    if wide:
        path = p.a_path or p.b_path
        if path is not None:
            text += f" ({path.rule}"
            failures = max(x.failures for x in (p.a_path, p.b_path) if x is not None)
            text += f", {failures}x failed)" if failures else ")"
    return text


def paths_table(view: MeshView, style: Style = PLAIN, wide: bool = False) -> str:
    names = [n.node for n in view.nodes]
    headers = ["", *names]
    rows: list[list[str]] = []
    colours: list[list[str | None]] = []
    for a in view.nodes:
        row: list[str] = [a.node]
        colour: list[str | None] = [None]
        for b in view.nodes:
            if a is b:
                row.append("-")
                colour.append(None)
                continue
            p = view.pair(a.node, b.node)
            row.append(cell(p, wide))
            colour.append(PATH_COLOURS.get(p.state))
        rows.append(row)
        colours.append(colour)
    text = table(headers, rows, style, colours)
    doc = paths_doc(view)["summary"]
    text += "pairs: " + ", ".join(f"{v} {k}" for k, v in sorted(doc.items())) + "\n" if doc else ""
    return text
