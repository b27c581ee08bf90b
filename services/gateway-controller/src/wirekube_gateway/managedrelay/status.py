"""``status.relay`` of the WireKubeMesh: what the managed relay is (pure).

An extension beyond the seed's CRD reference (docs/managed-relay.md), written
by the controller only while ``spec.relay.provider`` is ``managed``, removed
when it is not:

* ``address`` (``host:port``), ``source`` (ExternalIP / LoadBalancer /
  NodePort), ``node`` (NodePort: whose address) and ``reason`` — the same
  choice agents make (``wirekube_common.relayaddress``), with the sentence
  saying why; no address: ``address`` is absent and ``reason`` says what is
  missing (e.g. a LoadBalancer still waiting for its ingress);
* ``replicas`` (desired, from the spec) and ``readyReplicas`` (the
  Deployment's status);
* ``service`` (``namespace/name`` of the Service agents read) and
  ``observedGeneration`` of the mesh this describes;
* ``problem``: set when the spec cannot be built (the objects stay as they
  were; nothing is deleted for a typo).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wirekube_common.relayaddress import RelayAddress


def _format(address: RelayAddress) -> str:
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


def relay_status(
    address: RelayAddress,
    replicas: int,
    deployment: Mapping[str, Any] | None,
    service: str,
    generation: int,
    problem: str | None = None,
) -> dict[str, Any]:
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    out: dict[str, Any] = {
        "service": service,
        "replicas": replicas,
        "readyReplicas": ready,
        "reason": address.reason,
        "observedGeneration": generation,
    }
    if address.found:
        out["address"] = _format(address)
        out["source"] = address.source
    if address.node:
        out["node"] = address.node
    if problem:
        out["problem"] = problem
    return out
