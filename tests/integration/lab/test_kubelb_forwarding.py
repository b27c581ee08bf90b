"""kubelb's forwarding in a real lab, without a cluster.

The API server is replaced by its state (Services, EndpointSlices: a fake of
I/O); everything else is real: kubelb's loop plans and installs the nftables
table on the lab's ``load-balancer`` host, and clients behind a symmetric NAT
and a TCP-only firewall open TCP connections to the assigned address, which
must reach the targets the plan names — endpoints (``ip``) in turn with
round-robin, or a node port behind a 1:1 public address (``instance``) — and
stop when the endpoints go away. The Kubernetes tests (tests/integration/kube)
run the same controller against a real cluster.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wirekube_lab.kubelb import TARGET_TYPE_ANNOTATION, KubeLoadBalancer, node_reach
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


def service(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "creationTimestamp": f"2026-01-01T{name}"},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "ports": [{"name": "web", "port": 80, "nodePort": NODE_PORT, "protocol": "TCP"}],
            **extra,
        },
    }


def endpoint_slice(name: str, endpoints: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "web", "port": ENDPOINT_PORT, "protocol": "TCP"}],
        "endpoints": [
            {"nodeName": node, "addresses": [ip], "conditions": {"ready": True}}
            for node, ip in endpoints
        ],
    }


class ApiState:
    """The API server's objects, as kubelb reads and writes them."""

    def __init__(self) -> None:
        self.services: list[dict[str, Any]] = []
        self.slices: list[dict[str, Any]] = []
        self.status: dict[str, str] = {}

    def list_services(self) -> list[dict[str, Any]]:
        return self.services

    def list_endpoint_slices(self) -> list[dict[str, Any]]:
        return self.slices

    def patch_service_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        ingress = patch["status"]["loadBalancer"]["ingress"]
        self.status[f"{namespace}/{name}"] = ingress[0]["ip"]
        for s in self.services:
            if s["metadata"]["name"] == name:
                s["status"] = patch["status"]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def setup(
    module_lab_factory: Callable[..., Lab],
) -> Iterator[tuple[Lab, ApiState, KubeLoadBalancer]]:
    lab = module_lab_factory(TOPOLOGY)
    for host in ("pub-1", "pub-2"):
        lab.spawn(host, [sys.executable, "-c", SERVER, host, str(ENDPOINT_PORT)])
    lab.spawn("vm", [sys.executable, "-c", SERVER, "vm", str(NODE_PORT)])
    api = ApiState()
    balancer = KubeLoadBalancer(
        api,
        lambda ruleset: lab.exec("lb", ["nft", "-f", "-"], input=ruleset),
        lab.addresses("lb"),
        node_reach(lab.plan, ["pub-1", "pub-2", "vm"]),
        targets="ip",
        balance="round-robin",
    )
    balancer.start()
    yield lab, api, balancer
    balancer.stop()


def connect(lab: Lab, client: str, address: str) -> str:
    return lab.exec(client, [sys.executable, "-c", CLIENT, address, "80"]).stdout.strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.2)


def test_ip_targets_round_robin_from_behind_nats(
    setup: tuple[Lab, ApiState, KubeLoadBalancer],
) -> None:
    lab, api, balancer = setup
    api.services.append(service("web"))
    api.slices.append(
        endpoint_slice(
            "web",
            [
                ("pub-1", lab.address("pub-1")),
                ("pub-2", lab.address("pub-2")),
                ("vm", "10.3.0.99"),  # behind a NAT: its pods are not routed to the balancer
            ],
        )
    )
    wait_for(lambda: "ns/web" in api.status)
    ip = api.status["ns/web"]
    assert ip == lab.addresses("lb")[0]
    wait_for(lambda: bool(balancer.listeners) and bool(balancer.listeners[0].targets))
    answers = [connect(lab, client, ip) for client in ("c-home", "c-secure") * 3]
    servers = [a.split()[0] for a in answers]
    # One target per new connection, in turn; both NATs' clients get through.
    assert set(servers) == {"pub-1", "pub-2"}, answers
    assert all(a != b for a, b in itertools.pairwise(servers)), answers
    # The targets see the balancer as the client (it masquerades).
    assert {a.split()[1] for a in answers} == {ip}, answers


def test_instance_target_through_a_public_ip_and_release(
    setup: tuple[Lab, ApiState, KubeLoadBalancer],
) -> None:
    lab, api, _ = setup
    vm_web = service("vm-web")
    vm_web["metadata"]["annotations"] = {TARGET_TYPE_ANNOTATION: "instance"}
    api.services.append(vm_web)
    api.slices.append(endpoint_slice("vm-web", [("vm", "10.3.0.99")]))
    wait_for(lambda: "ns/vm-web" in api.status)
    ip = api.status["ns/vm-web"]
    assert ip == lab.addresses("lb")[1]
    wait_for(lambda: connect(lab, "c-home", ip).startswith("vm "))
    # The endpoint goes away: nothing forwards any more (the balancer's own
    # stack refuses), and the other Service is untouched.
    api.slices = [
        s for s in api.slices if s["metadata"]["labels"]["kubernetes.io/service-name"] != "vm-web"
    ]
    wait_for(lambda: connect(lab, "c-home", ip).startswith("error"))
    assert connect(lab, "c-home", api.status["ns/web"]).split()[0] in ("pub-1", "pub-2")
