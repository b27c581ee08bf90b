"""The ``wirekube-lab run`` output: one JSON document, or the same as readable tables (pure).

Top-level keys (documented in ``docs/lab.md``): ``ok``, ``topology``,
``nat_selftest``, ``paths``, ``pings``, ``mesh``, ``timings``. ``paths`` maps
``"a/b"`` pairs to ``{"mode": ..., "expected": ...}``; ``pings`` is
``{src: {dst: {"sent", "received", "rtt_avg_ms"}}}``; both are ``null``
until a mesh driver reports them. ``ok`` is false when a NAT self-test
failed, the mesh did not reach steady state, or a path differs from the
topology's ``expect.paths``; the exit status follows ``ok``.
"""

from __future__ import annotations

from typing import Any

from .topology import Topology, pair_key

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


def document(
    topology: Topology,
    described: dict[str, Any],
    nat_selftest: list[dict[str, Any]],
    selftest_note: str | None,
    driver: str,
    driver_note: str | None,
    steady: bool | None,
    paths: dict[str, str] | None,
    pings: dict[str, dict[str, dict[str, Any]]] | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    expected = {f"{a}/{b}": mode for (a, b), mode in topology.expect_paths}
    path_doc: dict[str, dict[str, str | None]] | None = None
    if paths is not None:
        path_doc = {}
        for key, mode in sorted(paths.items()):
            a, b = key.split("/", 1)
            ca, cb = pair_key(a, b)
            path_doc[f"{ca}/{cb}"] = {"mode": mode, "expected": expected.get(f"{ca}/{cb}")}
    topo = dict(described)
    topo["description"] = topology.description
    topo["expect_paths"] = expected
    doc: dict[str, Any] = {
        "ok": True,
        "topology": topo,
        "nat_selftest": nat_selftest,
        "paths": path_doc,
        "pings": pings,
        "mesh": {"driver": driver, "steady": steady, "note": driver_note},
        "timings": timings,
    }
    if selftest_note:
        doc["nat_selftest_note"] = selftest_note
    doc["ok"] = not failures(doc)
    return doc


def failures(doc: dict[str, Any]) -> list[str]:
    out = [
        f"NAT self-test {r['network']} ({r['kind']}, from {r['host']}): {'; '.join(r['problems'])}"
        for r in doc["nat_selftest"]
        if not r["ok"]
    ]
    if doc["mesh"]["steady"] is False:
        out.append("the mesh did not reach steady state")
    for pair, entry in (doc["paths"] or {}).items():
        if entry["expected"] is not None and entry["mode"] != entry["expected"]:
            out.append(f"path {pair}: {entry['mode']}, expected {entry['expected']}")
    # A pair that answered none of its pings is dark, whatever its path says,
    # unless the topology expects no path between the two at all.
    expected = {pair: entry["expected"] for pair, entry in (doc["paths"] or {}).items()} or doc[
        "topology"
    ]["expect_paths"]
    for src, row in (doc["pings"] or {}).items():
        for dst, v in row.items():
            if v["sent"] and not v["received"] and expected.get(_pair(src, dst)) != "none":
                out.append(f"pings {src} -> {dst}: none of {v['sent']} answered")
    return out


def _pair(a: str, b: str) -> str:
    return "/".join(sorted((a, b)))


def exit_code(doc: dict[str, Any]) -> int:
    return EXIT_OK if doc["ok"] else EXIT_FAILED


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def render_text(doc: dict[str, Any]) -> str:
    topo = doc["topology"]
    parts = [f"lab {topo['name']} (run {topo['run']}): {topo['description']}".rstrip(": ")]
    parts.append(
        _table(
            ["network", "router", "nat", "cidr", "public"],
            [
                [n["name"], n["router"], n["nat"], n["cidr"], n["wan_address"]]
                for n in topo["networks"]
            ],
        )
    )
    parts.append(
        _table(
            ["host", "role", "network", "address", "public address"],
            [
                [h["name"], h["role"], h["network"], ", ".join(h["addresses"]), h["public_address"]]
                for h in topo["hosts"]
            ],
        )
    )
    if doc["nat_selftest"]:
        rows = []
        for r in doc["nat_selftest"]:
            seen = r["seen"] or {}
            rows.append(
                [
                    r["network"],
                    r["kind"],
                    r["host"],
                    str(seen.get("mapping")),
                    str(seen.get("filtering")),
                    "yes" if seen.get("udp") else "no",
                    "yes" if seen.get("tcp") else "no",
                    "PASS" if r["ok"] else "FAIL: " + "; ".join(r["problems"]),
                ]
            )
        parts.append(
            "NAT self-test\n"
            + _table(
                ["network", "kind", "from", "mapping", "filtering", "udp", "tcp", "result"], rows
            )
        )
    if doc.get("nat_selftest_note"):
        parts.append(f"NAT self-test: {doc['nat_selftest_note']}")
    if doc["paths"] is not None:
        parts.append(
            "paths\n"
            + _table(
                ["pair", "mode", "expected"],
                [[k, v["mode"], str(v["expected"])] for k, v in doc["paths"].items()],
            )
        )
    elif topo["expect_paths"]:
        parts.append(
            "expected paths (not measured: "
            + (doc["mesh"]["note"] or "no mesh driver")
            + ")\n"
            + _table(["pair", "expected"], [[k, v] for k, v in topo["expect_paths"].items()])
        )
    if doc["pings"] is not None:
        rows = [
            [src, dst, f"{v['received']}/{v['sent']}", str(v.get("rtt_avg_ms"))]
            for src, row in doc["pings"].items()
            for dst, v in row.items()
        ]
        parts.append("pings\n" + _table(["from", "to", "received", "rtt avg ms"], rows))
    if doc["pings"] is not None or doc["paths"] is not None:
        mesh = doc["mesh"]
        parts.append(f"mesh: {mesh['driver']}, steady={mesh['steady']}: {mesh['note']}")
    parts.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in doc["timings"].items()))
    bad = failures(doc)
    parts.append("RESULT: " + ("ok" if not bad else "FAILED\n  " + "\n  ".join(bad)))
    return "\n\n".join(parts) + "\n"
