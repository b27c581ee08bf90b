"""``wirekubectl relays``: each relay replica's RelayAdmin (gRPC) — replica id,
connected keys (named by the WireKubePeer that publishes the key), frames and
bytes forwarded, drops.

The admin API listens on loopback by default (it is no business of the
network), so the CLI queries only the addresses it is given
(``--relay-admin HOST:PORT``, repeatable; e.g. after ``kubectl -n
wirekube-system port-forward deploy/wirekube-relay 9091``), with a bearer
token where the relay asks for one. Without an address it lists the relays
the mesh spec names and says how to reach their admin API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wirekube_cli.mesh import MeshView
from wirekube_cli.render import table
from wirekube_cli.term import PLAIN, Style

# A relay's admin API answers from memory within milliseconds; a few seconds
# cover a port-forward's set-up.
ADMIN_TIMEOUT_S = 5.0
ADMIN_PORT = 9091


@dataclass
class RelayReport:
    address: str
    ok: bool
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    peers: list[dict[str, Any]] = field(default_factory=list)


def query(address: str, token: str | None = None, timeout: float = ADMIN_TIMEOUT_S) -> RelayReport:
    """GetStats and ListPeers of one replica (I/O; failures are reported, not raised)."""
    import grpc  # noqa: PLC0415 - slow import, only for this command
    from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

    from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc  # noqa: PLC0415

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        with grpc.insecure_channel(address) as channel:
            stub = admin_pb2_grpc.RelayAdminStub(channel)
            stats = stub.GetStats(admin_pb2.GetStatsRequest(), timeout=timeout, metadata=metadata)
            peers = stub.ListPeers(admin_pb2.ListPeersRequest(), timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "ERROR"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return RelayReport(address, False, f"{code}: {details}")
    return RelayReport(
        address,
        True,
        stats=MessageToDict(
            stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        ),
        peers=[
            MessageToDict(
                p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for p in peers.peers
        ],
    )


def spec_relays(view: MeshView) -> list[str]:
    relay = view.spec.relay
    if relay.external is not None:
        return [relay.external.endpoint]
    if relay.provider == "managed":
        return ["managed (Service wirekube-system/wirekube-relay)"]
    return []


def relays_doc(view: MeshView, reports: Sequence[RelayReport]) -> dict[str, Any]:
    by_key = {n.public_key: n.node for n in view.nodes}
    out = []
    for r in reports:
        peers = [{**p, "node": by_key.get(str(p.get("public_key")))} for p in r.peers]
        out.append(
            {"admin": r.address, "ok": r.ok, "error": r.error, "stats": r.stats, "peers": peers}
        )
    return {"configured": spec_relays(view), "mode": view.spec.relay.mode, "replicas": out}


def relays_text(doc: dict[str, Any], style: Style = PLAIN) -> str:
    lines = [f"relay mode {doc['mode']}; configured: {', '.join(doc['configured']) or 'none'}"]
    if not doc["replicas"]:
        lines.append(
            "no admin API queried: pass --relay-admin HOST:PORT (the relay's admin gRPC listens on "
            f"loopback, port {ADMIN_PORT} by default: kubectl -n wirekube-system port-forward "
            f"deploy/wirekube-relay {ADMIN_PORT})"
        )
        return "\n".join(lines) + "\n"
    rows, colours = [], []
    for r in doc["replicas"]:
        s = r["stats"]
        if not r["ok"]:
            rows.append([r["admin"], "-", "unreachable", "-", "-", "-", r["error"] or ""])
            colours.append([None, None, "red", None, None, None, None])
            continue
        drops = sum(int(d.get("frames", 0)) for d in s.get("drops") or [])
        rows.append(
            [
                r["admin"],
                str(s.get("relay_id", "")),
                f"{int(float(s.get('uptime_seconds', 0)))} s up",
                str(s.get("registered_peers", 0)),
                str(s.get("frames_forwarded", 0)),
                str(s.get("bytes_forwarded", 0)),
                f"{drops} dropped",
            ]
        )
        colours.append([None, None, "green", None, None, None, None])
    text = table(
        ["ADMIN", "REPLICA", "STATE", "KEYS", "FRAMES", "BYTES", "DROPS"], rows, style, colours
    )
    peer_rows = []
    for r in doc["replicas"]:
        for p in r["peers"]:
            peer_rows.append(
                [
                    str(p.get("node") or "?"),
                    str(p.get("public_key", ""))[:12] + "...",
                    str(p.get("remote_address", "")),
                    f"{int(float(p.get('connected_seconds', 0)))} s",
                    str(p.get("frames_in", 0)),
                    str(p.get("frames_out", 0)),
                    r["admin"],
                ]
            )
    if peer_rows:
        text += "\n" + table(
            ["NODE", "KEY", "FROM", "CONNECTED", "FRAMES IN", "FRAMES OUT", "REPLICA"], peer_rows
        )
    return "\n".join(lines) + "\n" + text
