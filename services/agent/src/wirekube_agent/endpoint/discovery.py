"""Where other nodes should send this node's WireGuard packets.

Sources are tried in a configured priority order and the first answer wins;
the winner's name is published as ``status.endpointDiscoveryMethod``:

  annotation  wirekube.io/endpoint on the Node (an operator's word beats any guess)
  stun        the public mapping of the WireGuard port, from STUN (see netcheck)
  ipv6        a global IPv6 address on a local interface (no NAT in the way)
  aws-imds    the instance's public IPv4 from EC2 metadata (IMDSv2)
  external-ip the Node's ExternalIP
  internal    the Node's InternalIP (flat networks, same-VPC clusters)

Sources are asked lazily, so a node with an annotation never queries EC2
metadata. Each gatherer returns None when it has no answer; a malformed
annotation is reported and skipped, never fatal.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wirekube_agent.k8s.translate import endpoint_annotation
from wirekube_agent.model import Endpoint, NodeInfo
from wirekube_agent.timers import IMDS_TIMEOUT_S

log = logging.getLogger(__name__)

IMDS = "http://169.254.169.254/latest"


@dataclass(frozen=True)
class Discovery:
    endpoint: Endpoint | None
    method: str | None


def from_annotation(node: NodeInfo) -> Endpoint | None:
    try:
        return endpoint_annotation(node)
    except ValueError as exc:
        log.warning("ignoring malformed wirekube.io/endpoint annotation: %s", exc)
        return None


def from_node_ips(node: NodeInfo, port: int, external: bool) -> Endpoint | None:
    ips = node.external_ips if external else node.internal_ips
    return (str(ips[0]), port) if ips else None


def from_aws_imds(port: int, timeout: float = IMDS_TIMEOUT_S, base: str = IMDS) -> Endpoint | None:
    """The instance's public IPv4 via IMDSv2 (a PUT for a session token first)."""
    try:
        token_req = urllib.request.Request(
            f"{base}/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(token_req, timeout=timeout) as r:
            token = r.read().decode()
        ip_req = urllib.request.Request(
            f"{base}/meta-data/public-ipv4", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(ip_req, timeout=timeout) as r:
            ip = r.read().decode().strip()
    except OSError:
        return None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None  # an HTML error page from a proxy is not an address
    return (ip, port)


def discover(
    node: NodeInfo,
    port: int,
    order: Sequence[str],
    stun: Callable[[], Endpoint | None] | None = None,
    global_ipv6: Callable[[], Sequence[object]] | None = None,
) -> Discovery:
    """Ask each enabled source in order, stopping at the first answer."""
    gatherers: dict[str, Callable[[], Endpoint | None]] = {
        "annotation": lambda: from_annotation(node),
        "stun": stun or (lambda: None),
        "ipv6": lambda: _first_ipv6(global_ipv6, port),
        "aws-imds": lambda: from_aws_imds(port),
        "external-ip": lambda: from_node_ips(node, port, external=True),
        "internal": lambda: from_node_ips(node, port, external=False),
    }
    for method in order:
        gather = gatherers.get(method)
        endpoint = gather() if gather else None
        if endpoint is not None:
            return Discovery(endpoint, method)
    return Discovery(None, None)


def _first_ipv6(source: Callable[[], Sequence[object]] | None, port: int) -> Endpoint | None:
    addresses = source() if source else ()
    return (str(addresses[0]), port) if addresses else None
