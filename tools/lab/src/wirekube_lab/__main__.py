"""``wirekube-lab``: bring a topology up, test it, print what happened, tear it down.

Subcommands::

    wirekube-lab run TOPOLOGY.yaml [--json] [--workdir DIR] [--driver MOD:ATTR] [--no-selftest]
    wirekube-lab validate TOPOLOGY.yaml [--json]   # parse + address plan, no root needed
    wirekube-lab sweep                              # remove namespaces of dead lab runs
    wirekube-lab up TOPOLOGY.yaml [--state-dir DIR] # build it and leave it running
    wirekube-lab exec NODE -- CMD [ARGS...]         # run CMD in a host's or router's namespace
    wirekube-lab down [--state-dir DIR]             # remove it (also what a killed up left)

``run`` prints one JSON document with ``--json`` (shape in ``docs/lab.md``)
or readable tables otherwise, and exits 0 when everything passed, 1 when a
check failed (NAT self-test, steady state, expected paths), 2 on a bad
topology or usage, 3 when the lab could not be built. Logs go to stderr.
``up``/``exec``/``down`` are described in ``wirekube_lab.session``; ``exec``
exits with the command's status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from . import netops, session
from .addressing import plan_lab
from .naming import RunIds
from .pipeline import load_driver, run
from .report import EXIT_ERROR, EXIT_OK, EXIT_USAGE, document, exit_code, render_text
from .topology import TopologyError, load_topology


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wirekube-lab", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="bring a topology up, self-test, report, tear down")
    p_run.add_argument("topology", type=Path)
    p_run.add_argument("--json", action="store_true", help="print one JSON document")
    p_run.add_argument("--workdir", type=Path, help="keep logs here (default: a removed tempdir)")
    p_run.add_argument(
        "--driver",
        default="wirekube_lab.mesh:MeshDriver",
        help="mesh driver as module:attr (default: the real WireKube services; "
        "wirekube_lab.pipeline:NoMesh builds the network only)",
    )
    p_run.add_argument("--no-selftest", action="store_true", help="skip the NAT self-test")
    p_val = sub.add_parser("validate", help="parse a topology and print its address plan")
    p_val.add_argument("topology", type=Path)
    p_val.add_argument("--json", action="store_true")
    sub.add_parser("sweep", help="remove namespaces left by dead lab runs")
    state_help = (
        f"one lab per directory (default $WIREKUBE_LAB_STATE_DIR or {session.DEFAULT_STATE_DIR})"
    )
    p_up = sub.add_parser("up", help="build a topology and leave it running")
    p_up.add_argument("topology", type=Path)
    p_up.add_argument("--state-dir", type=Path, help=state_help)
    p_exec = sub.add_parser("exec", help="run a command in a lab host's or router's namespace")
    p_exec.add_argument("host", metavar="NODE")
    p_exec.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    p_exec.add_argument("--state-dir", type=Path, help=state_help)
    p_down = sub.add_parser("down", help="remove the lab (also what a killed up left)")
    p_down.add_argument("--state-dir", type=Path, help=state_help)
    p_keep = sub.add_parser("keep", help=argparse.SUPPRESS)  # the keeper process of `up`
    p_keep.add_argument("topology", type=Path)
    p_keep.add_argument("--state-dir", type=Path, required=True)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    topology = load_topology(args.topology)
    driver = load_driver(args.driver)
    try:
        ctx = run(topology, driver=driver, workdir=args.workdir, selftest=not args.no_selftest)
    except (netops.NetopsError, OSError) as exc:
        print(f"wirekube-lab: the lab could not be built or run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    doc = document(
        topology=topology,
        described=ctx.described,
        nat_selftest=[r.to_json() for r in ctx.nat_selftest],
        selftest_note=ctx.selftest_error,
        driver=driver.name,
        driver_note=getattr(driver, "note", None),
        steady=ctx.steady,
        paths=ctx.paths,
        pings=ctx.pings,
        timings=ctx.timings,
    )
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_text(doc), end="")
    return exit_code(doc)


def _cmd_validate(args: argparse.Namespace) -> int:
    topology = load_topology(args.topology)
    plan = plan_lab(topology, RunIds(pid=1, run="plan0"), IPv4Network("100.64.0.4/30"))
    hosts: list[dict[str, Any]] = [
        {
            "name": h.name,
            "role": h.role,
            "network": h.network,
            "addresses": [str(a) for a in h.addresses],
            "public_address": str(h.public_address),
        }
        for h in plan.hosts
    ]
    data: dict[str, Any] = {
        "name": topology.name,
        "networks": [
            {
                "name": r.network,
                "router": r.name,
                "nat": r.nat.kind,
                "cidr": str(r.lan_cidr),
                "wan_address": str(r.wan_address),
            }
            for r in plan.routers
        ],
        "hosts": hosts,
        "expect_paths": {f"{a}/{b}": m for (a, b), m in topology.expect_paths},
    }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{topology.name}: valid")
        for h in hosts:
            print(
                f"  {h['name']:<16} {h['role']:<6} {h['network']:<12} "
                f"{', '.join(h['addresses']):<28} public {h['public_address']}"
            )
    return EXIT_OK


def _split_dashes(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], True, argv[i + 1 :]
    return argv, False, []


def _cmd_session(args: argparse.Namespace) -> int:
    directory = session.state_dir(args.state_dir)
    try:
        if args.command == "up":
            return session.up(args.topology, directory)
        if args.command == "keep":
            return session.keep(args.topology, directory)
        if args.command == "exec":
            # Options given after NODE land in the remainder: take them from
            # its part before "--" (NODE --state-dir DIR -- CMD).
            head, sep, tail = _split_dashes(args.argv)
            if sep:
                extra = argparse.ArgumentParser(prog="wirekube-lab exec", add_help=False)
                extra.add_argument("--state-dir", type=Path)
                opts = extra.parse_args(head)
                if opts.state_dir is not None:
                    directory = opts.state_dir
            return session.exec_in(directory, args.host, tail if sep else head)
        return session.down(directory)
    except session.SessionError as exc:
        print(f"wirekube-lab: {exc}", file=sys.stderr)
        return EXIT_USAGE if args.command != "up" else EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command in ("up", "exec", "down", "keep"):
            return _cmd_session(args)
        swept = netops.sweep()
        print(f"removed {len(swept)} namespaces of dead lab runs")
        return EXIT_OK
    except TopologyError as exc:
        print(f"wirekube-lab: bad topology: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"wirekube-lab: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("wirekube-lab: interrupted; the lab was torn down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
