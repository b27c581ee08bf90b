"""``python -m wirekube_common.stun probe``: run NAT discovery and print JSON.

A diagnostic and test tool (the lab and the integration tests use it): probe
from an ordinary UDP socket (``--local``/``--local-port``) or, with
``--raw-port``, from a port owned by another socket -- the WireGuard listen
port -- through the raw-socket technique in ``wirekube_common.rawudp``.
Exit status 0 when at least one server answered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any

from wirekube_common.stun.aio import RawStunSocket, UdpStunSocket, is_local_address, resolve
from wirekube_common.stun.client import BindingResult
from wirekube_common.stun.discovery import DiscoveryOptions, discover
from wirekube_common.stun.endpoint import Endpoint, IPAddress
from wirekube_common.stun.timers import DISCOVERY_POLICY, FILTER_TEST_POLICY, RetransmitPolicy


class _LocalAddresses:
    """``ip in LOCAL`` asks the kernel (bind test), so no interface list is needed."""

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPAddress) and is_local_address(ip)


def _result_json(r: BindingResult) -> dict[str, Any]:
    def s(ep: Endpoint | None) -> str | None:
        return str(ep) if ep is not None else None

    return {
        "server": str(r.server),
        "changeIp": bool(r.change and r.change.change_ip),
        "changePort": bool(r.change and r.change.change_port),
        "mapped": s(r.mapped),
        "source": s(r.source),
        "responseOrigin": s(r.response_origin),
        "otherAddress": s(r.other_address),
        "rttMs": round(r.rtt * 1000, 3) if r.rtt is not None else None,
        "transmissions": r.transmissions,
        "timedOut": r.timed_out,
        "error": r.error.code if r.error else None,
        "software": r.software,
    }


async def _probe(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    servers: list[Endpoint] = []
    for text in args.server:
        servers.extend((await resolve(text, family))[:1])
    policy = RetransmitPolicy(args.rto, args.rc, args.rm) if args.rto else DISCOVERY_POLICY
    options = DiscoveryOptions(
        filtering=not args.no_filtering,
        mapping_detail=not args.no_mapping_detail,
        policy=policy,
        filter_policy=RetransmitPolicy(args.rto, 3, 4) if args.rto else FILTER_TEST_POLICY,
    )
    sock: RawStunSocket | UdpStunSocket
    if args.raw_port:
        sock = RawStunSocket(args.raw_port, family=family, fwmark=args.fwmark, policy=policy)
        local_port = args.raw_port
    else:
        host = args.local or ("::" if args.ipv6 else "0.0.0.0")
        sock = await UdpStunSocket.open(host, args.local_port, policy=policy)
        local_port = sock.local.port
    started = time.monotonic()
    try:
        found = await discover(
            sock.binding,
            servers,
            local_ips=_LocalAddresses(),
            local_port=local_port,
            options=options,
        )
    finally:
        sock.close()
    out = {
        "elapsedMs": round((time.monotonic() - started) * 1000, 1),
        "localPort": local_port,
        "mapped": str(found.report.mapped) if found.report.mapped else None,
        **found.report.status(),
        "rfc5780Server": str(found.rfc5780_server) if found.rfc5780_server else None,
        "results": [_result_json(r) for r in found.results],
    }
    json.dump(out, sys.stdout, indent=None if args.compact else 2)
    sys.stdout.write("\n")
    return 0 if any(r.ok for r in found.results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wirekube_common.stun")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="NAT discovery against STUN servers, JSON on stdout")
    p.add_argument("--server", action="append", required=True, help="host[:port], repeatable")
    p.add_argument("--local", help="local address to bind (UDP mode)")
    p.add_argument("--local-port", type=int, default=0)
    p.add_argument("--raw-port", type=int, help="probe from this port via a raw socket")
    p.add_argument("--fwmark", type=lambda v: int(v, 0), help="SO_MARK for raw probes")
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--no-filtering", action="store_true")
    p.add_argument("--no-mapping-detail", action="store_true")
    p.add_argument("--rto", type=float, help="initial RTO seconds (test-sized timers)")
    p.add_argument("--rc", type=int, default=4)
    p.add_argument("--rm", type=int, default=4)
    p.add_argument("--compact", action="store_true")
    args = parser.parse_args(argv)
    return asyncio.run(_probe(args))


if __name__ == "__main__":
    sys.exit(main())
