"""``wirekubectl`` (also the kubectl plugin ``kubectl wirekube``): the mesh as
its operators need to see it, read from the Kubernetes API alone (and the
relays' admin API where given).

    wirekubectl status                 every node: endpoint, NAT, direct/relayed, handshake, RTT
    wirekubectl paths [-o wide|json]   the N x N path matrix
    wirekubectl why A B                why A <-> B takes its path, and what would change it
    wirekubectl graph [--format F]     Graphviz DOT (svg when dot is installed) or Mermaid
    wirekubectl relays                 relay replicas from RelayAdmin (--relay-admin HOST:PORT)
    wirekubectl doctor [NODE]          what usually breaks, each finding with its fix
    wirekubectl rotate-key NODE [--wait]  a new WireGuard key pair for NODE (docs/keyrotation.md)

Exit codes (see wirekube_cli.errors): 0 ok, 1 problems found (doctor) or the
pair is down (why), 2 usage, 3 no kubeconfig, 4 API server unreachable or
refusing, 5 CRDs missing, 6 unknown node, 7 relay admin unreachable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wirekube_cli import doctor, graph, relays, render, rotate, why
from wirekube_cli.errors import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_RELAY_ADMIN,
    EXIT_UNKNOWN_NODE,
    EXIT_USAGE,
    CliError,
)
from wirekube_cli.kube import Cluster, find_kubeconfig
from wirekube_cli.mesh import MeshView, UnknownNode, build
from wirekube_cli.term import Style, colour_enabled, progress

# ``dot`` renders a mesh of hundreds of nodes in well under this.
DOT_TIMEOUT_S = 30.0


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument(
        "--kubeconfig",
        default=s,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    common.add_argument(
        "--context", default=s, help="kubeconfig context (default: the current one)"
    )
    common.add_argument(
        "--no-color", action="store_true", default=s, help="never colour (also NO_COLOR=1)"
    )
    return common


def parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="wirekubectl",
        description="Inspect a WireKube mesh: paths, why a pair is relayed, a graph, relays, checks.",
        epilog="exit codes: 0 ok, 1 problems/pair down, 2 usage, 3 no kubeconfig, 4 API error, "
        "5 CRDs missing, 6 unknown node, 7 relay admin unreachable",
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tab = ("table", "wide", "json", "yaml")
    s = sub.add_parser("status", parents=[common], help="one row per node")
    s.add_argument("-o", "--output", choices=tab, default="table")
    s = sub.add_parser("paths", parents=[common], help="the N x N path matrix")
    s.add_argument("-o", "--output", choices=tab, default="table")
    s = sub.add_parser("why", parents=[common], help="why a pair takes its path")
    s.add_argument("a", metavar="NODE_A")
    s.add_argument("b", metavar="NODE_B")
    s.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    s = sub.add_parser("graph", parents=[common], help="the mesh as DOT, SVG or Mermaid")
    s.add_argument(
        "--format", choices=graph.FORMATS, default="dot", help="svg needs Graphviz's dot"
    )
    s = sub.add_parser("relays", parents=[common], help="relay replicas from their admin API")
    s.add_argument("--relay-admin", action="append", default=[], metavar="HOST:PORT",
                   help="a replica's RelayAdmin gRPC address (repeatable)")  # fmt: skip
    s.add_argument(
        "--relay-admin-token-file",
        metavar="FILE",
        help="file holding the admin API's bearer token (the relay's --admin-token-file)",
    )
    s.add_argument("--relay-admin-token", default=os.environ.get("WIREKUBE_RELAY_ADMIN_TOKEN"),
                   help="the token itself (visible in ps; default: $WIREKUBE_RELAY_ADMIN_TOKEN)")  # fmt: skip
    s.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    s = sub.add_parser("doctor", parents=[common], help="check what usually breaks")
    s.add_argument("node", nargs="?", metavar="NODE", help="only findings about this node")
    s.add_argument("--no-network", action="store_true",
                   help="skip the STUN and relay checks (they send packets to the mesh spec's "
                   "addresses: run them where the nodes' networks are)")  # fmt: skip
    s.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    s = sub.add_parser(
        "rotate-key",
        parents=[common],
        help="ask a node's agent for a new WireGuard key pair (annotates the Node)",
    )
    s.add_argument("node", metavar="NODE")
    s.add_argument(
        "--wait",
        action="store_true",
        help="wait until the new key is published and a handshake under it is reported",
    )
    s.add_argument("--timeout", type=float, default=rotate.DEFAULT_WAIT_S, metavar="SECONDS",
                   help=f"how long --wait waits (default {rotate.DEFAULT_WAIT_S:.0f})")  # fmt: skip
    s.add_argument("--request-id", metavar="ID",
                   help="the annotation's value (default: the time and a random suffix)")  # fmt: skip
    return p


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(
        find_kubeconfig(getattr(args, "kubeconfig", None)), getattr(args, "context", None)
    )


def _view(cluster: Cluster) -> MeshView:
    with progress(f"reading the mesh from {cluster.server}"):
        peers = cluster.peers()
        mesh = cluster.mesh()
        nodes = cluster.nodes()
    return build(peers, mesh, nodes)


def _out(text: str) -> None:
    sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    style = Style(colour_enabled(sys.stdout, False if getattr(args, "no_color", False) else None))
    cluster = _cluster(args)
    now = time.time()
    if args.command == "doctor":
        return _doctor(args, cluster, style, now)
    if args.command == "rotate-key":
        return _rotate_key(args, cluster, now)
    view = _view(cluster)
    if args.command == "status":
        if args.output in ("json", "yaml"):
            _out(render.dump(render.status_doc(view, now), args.output))
        else:
            _out(render.status_table(view, now, style, wide=args.output == "wide"))
        return EXIT_OK
    if args.command == "paths":
        if args.output in ("json", "yaml"):
            _out(render.dump(render.paths_doc(view), args.output))
        else:
            _out(render.paths_table(view, style, wide=args.output == "wide"))
        return EXIT_OK
    if args.command == "why":
        try:
            pair = view.pair(args.a, args.b)
        except UnknownNode as exc:
            raise CliError(str(exc), EXIT_UNKNOWN_NODE) from exc
        if pair.a is pair.b:
            raise CliError("why needs two different nodes", EXIT_USAGE)
        events = why.pair_events(
            cluster.events(pair.a.peer), cluster.events(pair.b.peer), pair.a.peer, pair.b.peer
        )
        x = why.explain(pair, view.spec, now, events)
        _out(why.render(x) if args.output == "text" else render.dump(x.to_dict(), args.output))
        return EXIT_PROBLEMS if pair.state == "down" else EXIT_OK
    if args.command == "graph":
        return _graph(args, view)
    if args.command == "relays":
        token = args.relay_admin_token
        if args.relay_admin_token_file:
            try:
                token = Path(args.relay_admin_token_file).read_text().strip()
            except OSError as exc:
                raise CliError(f"cannot read the admin token: {exc}", EXIT_USAGE) from exc
        reports = []
        for address in args.relay_admin:
            with progress(f"asking relay admin {address}"):
                reports.append(relays.query(address, token))
        doc = relays.relays_doc(view, reports)
        _out(
            relays.relays_text(doc, style)
            if args.output == "table"
            else render.dump(doc, args.output)
        )
        return EXIT_RELAY_ADMIN if any(not r.ok for r in reports) else EXIT_OK
    raise CliError(f"unknown command {args.command}", EXIT_USAGE)


def _graph(args: argparse.Namespace, view: MeshView) -> int:
    if args.format == "mermaid":
        _out(graph.to_mermaid(view))
        return EXIT_OK
    dot_text = graph.to_dot(view)
    if args.format == "dot":
        _out(dot_text)
        return EXIT_OK
    dot = shutil.which("dot")
    if dot is None:
        raise CliError("--format svg needs Graphviz's dot (apt-get install graphviz); "
                       "--format dot prints the source", EXIT_USAGE)  # fmt: skip
    with progress("rendering with dot"):
        done = subprocess.run([dot, "-Tsvg"], input=dot_text, capture_output=True, text=True,
                              timeout=DOT_TIMEOUT_S, check=False)  # fmt: skip
    if done.returncode != 0:
        raise CliError(f"dot failed: {done.stderr.strip()[:300]}", EXIT_USAGE)
    _out(done.stdout)
    return EXIT_OK


def _rotate_key(args: argparse.Namespace, cluster: Cluster, now: float) -> int:
    node = args.node
    request = args.request_id or rotate.request_id(now)
    if not request.strip() or len(request) > rotate.MAX_REQUEST_LEN:
        raise CliError(f"--request-id must be 1 to {rotate.MAX_REQUEST_LEN} characters", EXIT_USAGE)
    if args.timeout <= 0:
        raise CliError("--timeout must be positive", EXIT_USAGE)
    if cluster.node(node) is None:
        raise CliError(f"no Node {node!r}", EXIT_UNKNOWN_NODE)
    peer_name = f"node-{node}"
    before = rotate.progress(cluster.peer(peer_name), request)
    cluster.annotate_node(node, rotate.annotation_patch(request))
    _out(f"requested a key rotation of {node} ({rotate.REQUEST_ANNOTATION}={request})\n")
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    state = before
    with progress(f"waiting for {node} to publish its new key"):
        while not state.published and time.monotonic() < deadline:
            time.sleep(rotate.POLL_S)
            state = rotate.progress(cluster.peer(peer_name), request)
    if not state.published:
        raise CliError(f"{node} did not publish a new key within {args.timeout:.0f}s "
                       f"(is its agent running?)", EXIT_PROBLEMS)  # fmt: skip
    _out(f"new public key {state.public_key} (was {before.public_key})\n")
    with progress(f"waiting for a handshake under {node}'s new key"):
        while not state.handshake and time.monotonic() < deadline:
            time.sleep(rotate.POLL_S)
            state = rotate.progress(cluster.peer(peer_name), request)
    if not state.handshake:
        raise CliError(f"no handshake under the new key reported within {args.timeout:.0f}s",
                       EXIT_PROBLEMS)  # fmt: skip
    _out("handshakes under the new key: yes\n")
    return EXIT_OK


def _doctor(args: argparse.Namespace, cluster: Cluster, style: Style, now: float) -> int:
    missing = cluster.missing_crds()
    if missing and len(missing) == len(doctor.CRDS):
        view = build([], None, cluster.nodes())
    else:
        view = _view(cluster)
    if args.node is not None:
        known = (
            {n.node for n in view.nodes} | {n.peer for n in view.nodes} | set(view.labelled_nodes)
        )
        if args.node not in known:
            raise CliError(f"no node {args.node!r} in the mesh (nodes: {', '.join(sorted(n.node for n in view.nodes)) or 'none'})",
                           EXIT_UNKNOWN_NODE)  # fmt: skip
        args.node = view.node(args.node).node if args.node not in view.labelled_nodes else args.node
    with progress("checking STUN servers, the relay and the clock"):
        relay = view.spec.relay
        service = cluster.service(*doctor.MANAGED_SERVICE) if relay.provider == "managed" else None
        probes = doctor.probe(
            view, missing, cluster.server_time(), time.time(), not args.no_network, service
        )
    found = doctor.findings(view, probes, now, args.node)
    if args.output == "table":
        _out(doctor.render(found, style))
    else:
        doc: dict[str, Any] = {
            "findings": [f.to_dict() for f in found],
            "problems": doctor.exit_problems(found),
        }
        _out(render.dump(doc, args.output))
    return EXIT_PROBLEMS if doctor.exit_problems(found) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return run(args)
    except CliError as exc:
        print(f"wirekubectl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("wirekubectl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
