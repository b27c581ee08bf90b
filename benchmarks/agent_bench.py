"""Agent scale benchmark: 1000 WireKubePeers against one real agent.

Run on demand (root): ``uv run python benchmarks/agent_bench.py [--peers 1000]``.

A real kube-apiserver holds N WireKubePeer objects; one agent runs in a lab
namespace with a real wireguard-go interface. Printed figures:

* converge: agent start → all N peers configured in wireguard-go (also the
  time from the agent's first log line, to separate Python start-up);
* one change: an allowedIPs patch accepted by the API → visible in wireguard-go
  (median and max of several changes);
* the agent's CPU seconds and peak RSS, and the API requests it made.

Peers have no endpoint, so wireguard-go never sends a packet for them: the
benchmark measures the control plane, not the network. Targets (issue 3):
converge < 5 s, one change < 100 ms, RSS < 150 MiB.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client as k8s

from wirekube_lab.controlplane import ControlPlane, ensure_binaries
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab

GROUP, VERSION, PLURAL = "wirekube.io", "v1alpha1", "wirekubepeers"

CHANGE_PROBE = """
import sys, time
from kubernetes import client, config
from wirekube_common.wireguard.uapi import UapiClient
api = client.CustomObjectsApi(config.new_client_from_config(sys.argv[1]))
uapi = UapiClient("wire_kube")
for c in range(int(sys.argv[2])):
    name = f"node-bench-{c:05d}"
    extra = f"10.250.{c}.1/32"
    obj = api.get_cluster_custom_object("wirekube.io", "v1alpha1", "wirekubepeers", name)
    allowed = [*obj["spec"]["allowedIPs"], extra]
    api.patch_cluster_custom_object(
        "wirekube.io", "v1alpha1", "wirekubepeers", name, {"spec": {"allowedIPs": allowed}}
    )
    t = time.monotonic()
    while not any(extra in {str(n) for n in p.allowed_ips} for p in uapi.get().peers.values()):
        if time.monotonic() - t > 10:
            sys.exit("change not applied within 10 s")
        time.sleep(0.005)
    print(time.monotonic() - t)
"""


def fake_peer(i: int) -> dict[str, object]:
    key = base64.b64encode(os.urandom(32)).decode()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WireKubePeer",
        "metadata": {"name": f"node-bench-{i:05d}"},
        "spec": {
            "publicKey": key,
            "allowedIPs": [f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
        },
    }


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return cpu, hwm * 1024


def wg_peer_count(mesh: MeshLab) -> int:
    out = mesh.agents["bench"].exec(["wg", "show", "wire_kube", "peers"], check=False).stdout
    return len(out.split())


def metric(mesh: MeshLab, name: str) -> float:
    url = f"http://{mesh.lab.address('bench')}:9090/metrics"
    out = mesh.lab.exec(
        "bench",
        [
            "python3",
            "-c",
            f"import urllib.request;print(urllib.request.urlopen('{url}').read().decode())",
        ],
    ).stdout
    for line in out.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[1])
    raise KeyError(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=10)
    args = ap.parse_args()
    n = args.peers
    topology = {
        "name": "agent-bench",
        "networks": {"lan": {"nat": {"kind": "port-restricted"}}},
        "hosts": {"bench": {"network": "lan", "role": "node"}},
        "mesh": {"relay": {"mode": "never"}},
    }
    with tempfile.TemporaryDirectory() as tmp, ControlPlane(bin_dir=ensure_binaries()) as cp:
        cp.install_wirekube()
        custom = k8s.CustomObjectsApi(cp.api_client())
        t = time.monotonic()
        for i in range(n):
            custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, fake_peer(i))
        print(f"created {n} WireKubePeers in {time.monotonic() - t:.1f}s")
        with Lab(topology, workdir=tmp) as lab:
            mesh = MeshLab(lab, cp)
            mesh.apply_mesh()
            mesh.register_node("bench")
            started = time.monotonic()
            agent = mesh.start_agent("bench")
            while wg_peer_count(mesh) < n:
                if not agent.alive:
                    raise SystemExit(agent.log_path.read_text()[-3000:])
                time.sleep(0.02)
            converge = time.monotonic() - started
            print(f"converge: {n} peers configured {converge:.2f}s after the agent started")
            time.sleep(2)  # let status writes settle
            # Measured inside the agent's namespaces: patch through the API,
            # then poll wireguard-go's UAPI every 5 ms until it shows.
            kubeconfig = cp.write_kubeconfig(Path(tmp) / "lab.kubeconfig", lab=True)
            out = agent.exec(
                [sys.executable, "-c", CHANGE_PROBE, str(kubeconfig), str(args.changes)],
                timeout=120,
            ).stdout
            latencies = [float(x) for x in out.split()]
            cpu, rss = proc_stats(agent.pid)
            requests = metric(mesh, "wirekube_api_requests")
            writes = metric(mesh, "wirekube_api_writes")
            print(
                f"one change: median {statistics.median(latencies) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} changes "
                "(API accepted the patch -> visible in wireguard-go)"
            )
            print(f"agent: {cpu:.2f} CPU seconds, peak RSS {rss / 2**20:.0f} MiB")
            print(f"API: {requests:.0f} requests made by the agent, {writes:.0f} of them writes")
            mesh.stop_agent("bench")


if __name__ == "__main__":
    main()
