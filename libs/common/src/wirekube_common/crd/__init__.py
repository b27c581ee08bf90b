"""Typed models of the wirekube.io/v1alpha1 custom resources.

Translation between the API's dicts and these frozen dataclasses is pure: no
client, no I/O. ``from_dict`` applies the same defaults as the CRD schema (so a
model built from an object written before a default existed still reads
right) and raises ``InvalidObject`` with the field path on a type error;
``to_dict`` produces what the API server would store, omitting unset optional
fields so round-trips are exact.
"""

from wirekube_common.crd.base import API_VERSION, GROUP, VERSION, InvalidObject, ObjectMeta
from wirekube_common.crd.gateway import (
    Gateway,
    GatewayHealthCheck,
    GatewayRoute,
    GatewaySNAT,
    GatewaySpec,
    GatewayStatus,
)
from wirekube_common.crd.mesh import ExternalRelay, ManagedRelay, Mesh, MeshSpec, RelaySpec
from wirekube_common.crd.peer import (
    NODE_LABEL,
    Peer,
    PeerPath,
    PeerSpec,
    PeerStatus,
    ProbeCandidate,
    derive_transport_mode,
    peer_name_for_node,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "NODE_LABEL",
    "VERSION",
    "ExternalRelay",
    "Gateway",
    "GatewayHealthCheck",
    "GatewayRoute",
    "GatewaySNAT",
    "GatewaySpec",
    "GatewayStatus",
    "InvalidObject",
    "ManagedRelay",
    "Mesh",
    "MeshSpec",
    "ObjectMeta",
    "Peer",
    "PeerPath",
    "PeerSpec",
    "PeerStatus",
    "ProbeCandidate",
    "RelaySpec",
    "derive_transport_mode",
    "peer_name_for_node",
]
