"""Configuration from flags, with environment variables as defaults.

Every flag ``--some-thing`` can also be given as ``WIREKUBE_STUN_SOME_THING``
(flags win). RFC 5780 mode needs ``--alternate-address`` (a second IP of
this host) and uses ``--alternate-port``; both addresses must then be
specific, because RESPONSE-ORIGIN and OTHER-ADDRESS must name real
addresses a client can reach.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

from wirekube_common.stun.endpoint import Endpoint, IPAddress, normalise_ip
from wirekube_stunprobe import limits
from wirekube_stunprobe.responder import AddressTable

ENV_PREFIX = "WIREKUBE_STUN_"


@dataclass(frozen=True)
class Settings:
    table: AddressTable
    also_listen: tuple[IPAddress, ...]
    tcp: bool
    health_address: str
    metrics_port: int
    metrics_address: str
    rate: float
    burst: float
    global_rate: float
    global_burst: float
    max_factor: float
    software: str | None
    log_level: str
    log_format: str


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wirekube-stun-probe",
        description="STUN server (RFC 5389 over UDP and TCP; RFC 5780 with two addresses).",
    )

    def opt(name: str, default: str, help_: str, **kw: object) -> None:
        p.add_argument(f"--{name}", default=_env(name, default), help=help_, **kw)  # type: ignore[arg-type]

    opt("address", "0.0.0.0", "primary IP to listen on")
    opt("port", "3478", "primary port (UDP and TCP)", type=int)
    opt("alternate-address", "", "second IP of this host: enables RFC 5780")
    opt("alternate-port", "3479", "alternate port used in RFC 5780 mode", type=int)
    opt("also-listen", "", "comma-separated extra IPs served on --port (e.g. '::')")
    opt("tcp", "true", "serve STUN over TCP on the primary port (true/false)")
    opt("health-address", "0.0.0.0:50051", "gRPC health service host:port ('' disables)")
    opt("metrics-port", "9090", "Prometheus port (0 disables)", type=int)
    opt("metrics-address", "0.0.0.0", "Prometheus bind address")
    opt("rate", str(limits.PER_SOURCE_RATE), "requests/s per source IP", type=float)
    opt("burst", str(limits.PER_SOURCE_BURST), "burst per source IP", type=float)
    opt("global-rate", str(limits.GLOBAL_RATE), "requests/s for all sources", type=float)
    opt("global-burst", str(limits.GLOBAL_BURST), "global burst", type=float)
    opt("max-amplification", str(limits.MAX_AMPLIFICATION), "reply/request size bound", type=float)
    opt("software", limits.SOFTWARE, "SOFTWARE attribute ('' to omit)")
    opt("log-level", os.environ.get("WIREKUBE_LOG_LEVEL", "info"), "log level")
    opt("log-format", os.environ.get("WIREKUBE_LOG_FORMAT", "json"), "json or text")
    return p


def parse(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        primary_ip = normalise_ip(a.address)
        alt_ip = normalise_ip(a.alternate_address) if a.alternate_address else None
        also = tuple(normalise_ip(x) for x in a.also_listen.split(",") if x.strip())
    except ValueError as exc:
        parser.error(str(exc))
    if alt_ip is not None:
        if primary_ip.is_unspecified or alt_ip.is_unspecified:
            parser.error("RFC 5780 mode needs specific --address and --alternate-address")
        if alt_ip.version != primary_ip.version or alt_ip == primary_ip:
            parser.error("--alternate-address must be another IP of the same family")
        if a.alternate_port == a.port:
            parser.error("--alternate-port must differ from --port")
    tcp = str(a.tcp).lower() in ("1", "true", "yes", "on")
    if a.log_format not in ("json", "text"):
        parser.error("--log-format must be json or text")
    table = AddressTable(
        Endpoint(primary_ip, a.port),
        alt_ip,
        a.alternate_port if alt_ip is not None else None,
    )
    for ip in also:
        if ip in (primary_ip, alt_ip):
            parser.error(f"--also-listen {ip} duplicates a primary/alternate address")
    return Settings(
        table=table,
        also_listen=also,
        tcp=tcp,
        health_address=a.health_address,
        metrics_port=a.metrics_port,
        metrics_address=a.metrics_address,
        rate=a.rate,
        burst=a.burst,
        global_rate=a.global_rate,
        global_burst=a.global_burst,
        max_factor=a.max_amplification,
        software=a.software or None,
        log_level=a.log_level,
        log_format=a.log_format,
    )
