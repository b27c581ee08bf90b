"""kubelb's forwarding in a real lab, against a real API server, without kubelets.

The session's control plane (kube-apiserver + etcd) holds the Services; the
test writes their EndpointSlices itself, as the endpoint-slice controller
would (the control plane runs no controller-manager), naming lab hosts as the
endpoints. Everything else is the real thing: kubelb's loop assigns addresses
and writes ``status.loadBalancer.ingress``, installs the nftables table on the
lab's ``load-balancer`` host, and clients behind a symmetric NAT and a
TCP-only firewall open TCP connections to the address, which must reach the
targets the plan names — endpoints (``ip``) in turn with round-robin, or a
node port behind a 1:1 public address (``instance``) — and stop when the
endpoints go away. tests/integration/kube runs the same controller in front
of real pods.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from wirekube_lab.kubelb import TARGET_TYPE_ANNOTATION, ClientApi, KubeLoadBalancer, node_reach
from wirekube_lab.lab import Lab

TOPOLOGY = {
    "name": "kubelb-forwarding",
    "networks": {
        "home": {"nat": "symmetric"},
        "secure": {"nat": "tcp-only"},
        "cloud": {"nat": "symmetric"},
    },
    "hosts": {
        "pub-1": {"network": "internet"},
        "pub-2": {"network": "internet"},
        "vm": {"network": "cloud", "public_ip": True},
        "c-home": {"network": "home"},
        "c-secure": {"network": "secure"},
        "lb": {
            "network": "internet",
            "role": "load-balancer",
            "addresses": 2,
            "targets": "ip",
            "balance": "round-robin",
        },
    },
}
ENDPOINT_PORT = 8000
NODE_PORT = 30080
# Answers each connection with "<host> <peer address>" and closes it.
SERVER = (
    "import socket,sys\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',int(sys.argv[2])));s.listen(16)\n"
    "while True:\n"
    "    c,p=s.accept();c.sendall(f'{sys.argv[1]} {p[0]}'.encode());c.close()\n"
)
CLIENT = (
    "import socket,sys\n"
    "try:\n"
    "    c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3)\n"
    "    print(c.recv(100).decode())\n"
    "except OSError as e:\n"
    "    print('error',type(e).__name__)\n"
)


def service(namespace: str, name: str, target_type: str, node_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "annotations": {TARGET_TYPE_ANNOTATION: target_type},
        },
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "ports": [{"name": "web", "port": 80, "nodePort": node_port, "protocol": "TCP"}],
        },
    }


def endpoint_slice(namespace: str, service: str, endpoints: list[tuple[str, str]]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": namespace,
            "name": f"{service}-lab",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "web", "port": ENDPOINT_PORT, "protocol": "TCP"}],
        "endpoints": [
            {"nodeName": node, "addresses": [ip], "conditions": {"ready": True}}
            for node, ip in endpoints
        ],
    }


@dataclass
class Env:
    lab: Lab
    cp: Any
    namespace: str
    balancer: KubeLoadBalancer

    def apply(self, obj: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def ingress(self, name: str) -> str | None:
        svc = json.loads(
            self.cp.kubectl("get", "service", name, "-n", self.namespace, "-o", "json").stdout
        )
        entries = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        return entries[0]["ip"] if entries else None


@pytest.fixture(scope="module")
def env(module_lab_factory: Callable[..., Lab], control_plane: Any) -> Iterator[Env]:
    lab = module_lab_factory(TOPOLOGY)
    for host in ("pub-1", "pub-2"):
        lab.spawn(host, [sys.executable, "-c", SERVER, host, str(ENDPOINT_PORT)])
    lab.spawn("vm", [sys.executable, "-c", SERVER, "vm", str(NODE_PORT)])
    namespace = f"kubelb-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", namespace)
    balancer = KubeLoadBalancer(
        ClientApi(control_plane.api_client()),
        lambda ruleset: lab.exec("lb", ["nft", "-f", "-"], input=ruleset),
        lab.addresses("lb"),
        node_reach(lab.plan, ["pub-1", "pub-2", "vm"]),
        targets="ip",
        balance="round-robin",
    )
    balancer.start()
    try:
        yield Env(lab, control_plane, namespace, balancer)
    finally:
        balancer.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        assert balancer.errors == 0


def connect(lab: Lab, client: str, address: str) -> str:
    return lab.exec(client, [sys.executable, "-c", CLIENT, address, "80"]).stdout.strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.2)


def test_ip_targets_round_robin_from_behind_nats(env: Env) -> None:
    lab, ns = env.lab, env.namespace
    env.apply(service(ns, "web", "ip", NODE_PORT + 1))
    env.apply(
        endpoint_slice(
            ns,
            "web",
            [
                ("pub-1", lab.address("pub-1")),
                ("pub-2", lab.address("pub-2")),
                ("vm", "10.3.0.99"),  # behind a NAT: its pods are not routed to the balancer
            ],
        )
    )
    wait_for(lambda: env.ingress("web") is not None)
    ip = env.ingress("web")
    assert ip == lab.addresses("lb")[0]
    wait_for(lambda: ip in {ls.address for ls in env.balancer.listeners if ls.targets})
    answers = [connect(lab, client, ip) for client in ("c-home", "c-secure") * 3]
    servers = [a.split()[0] for a in answers]
    # One target per new connection, in turn; both NATs' clients get through.
    assert set(servers) == {"pub-1", "pub-2"}, answers
    assert all(a != b for a, b in itertools.pairwise(servers)), answers
    # The targets see the balancer as the client (it masquerades).
    assert {a.split()[1] for a in answers} == {ip}, answers


def test_instance_target_through_a_public_ip_then_released(env: Env) -> None:
    lab, ns = env.lab, env.namespace
    env.apply(service(ns, "vm-web", "instance", NODE_PORT))
    env.apply(endpoint_slice(ns, "vm-web", [("vm", "10.3.0.99")]))
    wait_for(lambda: env.ingress("vm-web") is not None)
    ip = env.ingress("vm-web")
    assert ip is not None and ip in lab.addresses("lb") and ip != env.ingress("web")
    wait_for(lambda: connect(lab, "c-home", ip).startswith("vm "))
    # The endpoint goes away: nothing forwards any more (the balancer's own
    # stack refuses), and the other Service is untouched.
    env.cp.kubectl("delete", "endpointslice", "vm-web-lab", "-n", ns)
    wait_for(lambda: connect(lab, "c-home", ip).startswith("error"))
    assert connect(lab, "c-home", str(env.ingress("web"))).split()[0] in ("pub-1", "pub-2")
    # The Service goes: its address is free for the next one.
    env.cp.kubectl("delete", "service", "vm-web", "-n", ns)
    wait_for(lambda: ip not in env.balancer.assigned.values())
