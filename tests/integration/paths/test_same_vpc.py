"""Two nodes of one VPC, one with its own public IP, talk over the VPC's addresses.

The lab's VPC router hairpins like a cloud: node-a reaching node-b's public
address goes through the NAT gateway and back (DNAT to node-b, source NAT to
the gateway's address). So every direct candidate answers the path probes:
node-b's public address, the gateway address node-a's probes come from, and
both internal addresses. The agents must still pick the internal addresses:
an answer from one proves a shared network, and the public path costs a NAT
gateway each way (latency, and on a cloud bill). Real apiserver, relay, STUN
server and agents; the proof is each WireGuard's endpoint for the other.
"""

from __future__ import annotations

import time
from pathlib import Path

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab, peer_name
from wirekube_lab.topology import parse_topology

TOPOLOGY = parse_topology(
    {
        "name": "same-vpc",
        "networks": {"vpc": {"nat": "symmetric"}},
        "hosts": {
            "node-a": {"network": "vpc", "role": "node"},
            "node-b": {"network": "vpc", "role": "node", "public_ip": True},
            "relay": {"network": "internet", "role": "relay"},
            "stun": {"network": "internet", "role": "stun"},
        },
        # default timers: the direct path comes from the agents' first probe burst
        "mesh": {"relay": {"mode": "auto", "provider": "external"}},
    }
)
WG_PORT = 51820
# Past the agents' initial probe burst: every candidate has been probed and
# answered by then, so a choice that would flip to a better answer has flipped.
SETTLE_S = 6.0


def endpoints(mesh: MeshLab, host: str) -> dict[str, str]:
    """WireGuard endpoint per peer public key, from ``wg show dump`` in ``host``."""
    out = mesh.agents[host].exec(["wg", "show", "wire_kube", "dump"]).stdout
    return {f[0]: f[2] for f in (line.split("\t") for line in out.splitlines()[1:])}


def test_same_vpc_nodes_use_internal_addresses_where_the_public_ip_hairpins(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with Lab(TOPOLOGY, workdir=tmp_path) as lab:
        a, b = "node-a", "node-b"
        # the premise: from inside the VPC, node-b's public address answers
        hairpin = lab.ping(a, lab.public_address(b), count=2, interval=0.1)
        assert hairpin.ok, f"no hairpin to {lab.public_address(b)}: {hairpin}"
        mesh = MeshLab(lab, control_plane)
        try:
            nodes = mesh.start()
            assert sorted(nodes) == [a, b]
            mesh.wait_until(
                "both ends direct",
                lambda: (
                    mesh.transports(a).get(peer_name(b)) == "direct"
                    and mesh.transports(b).get(peer_name(a)) == "direct"
                ),
                45,
            )
            time.sleep(SETTLE_S)
            keys = {h: (mesh.peer(h) or {})["spec"]["publicKey"] for h in (a, b)}
            seen = {a: endpoints(mesh, a)[keys[b]], b: endpoints(mesh, b)[keys[a]]}
            print(f"WireGuard endpoints after {SETTLE_S} s direct: {seen}")
            assert seen == {a: f"{lab.address(b)}:{WG_PORT}", b: f"{lab.address(a)}:{WG_PORT}"}
            assert lab.ping(a, lab.address(b), count=3, interval=0.1).ok
            # the agents' own account agrees: their path went direct via the VPC
            assert f"direct up via {lab.address(b)}:{WG_PORT}" in mesh.agents[a].log_text()
            assert f"direct up via {lab.address(a)}:{WG_PORT}" in mesh.agents[b].log_text()
        finally:
            mesh.stop()
