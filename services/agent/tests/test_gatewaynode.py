"""When the gateway node touches nft and ip_forward (scheduling logic); its metrics.

The nft adapter is replaced by an in-memory table that applies the generated
scripts' effect; the real adapter is exercised against a real kernel in
tests/integration/gatewaymesh.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import SimpleNamespace

import pytest

from wirekube_agent.gateway import forwarding as gatewaynode
from wirekube_agent.gateway.cache import GatewayAssignment
from wirekube_agent.gateway.forwarding import Forwarding
from wirekube_agent.gateway.metrics import GatewayCollector
from wirekube_agent.gateway.natrules import Observed, rules_for
from wirekube_agent.netlink import nft
from wirekube_agent.timers import RESYNC_INTERVAL_S
from wirekube_common.gateway import GatewayDuty
from wirekube_common.gwhealth.checker import ProbeHealth

DUTY = GatewayDuty("vpc-b", ("172.20.1.0/24",), True, "172.20.1.11", ("10.231.1.10/32",))


class FakeNft:
    def __init__(self) -> None:
        self.table: Observed = Observed()
        self.lists = 0
        self.scripts: list[str] = []
        self.fail: str | None = None

    def observed(self) -> Observed:
        self.lists += 1
        return self.table

    def apply(self, script: str) -> None:
        if self.fail:
            raise nft.NftError(self.fail)
        self.scripts.append(script)
        if script.startswith("delete table"):
            self.table = Observed()
        else:
            rules, _ = rules_for([DUTY], "wire_kube")
            self.table = Observed(
                True,
                frozenset({"forward", "postrouting"}),
                {r.key(): i for i, r in enumerate(rules)},
            )

    def delete_table(self) -> bool:
        had = self.table.table
        self.table = Observed()
        return had


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    f = FakeNft()
    monkeypatch.setattr(gatewaynode.nft, "observed", f.observed)
    monkeypatch.setattr(gatewaynode.nft, "apply", f.apply)
    monkeypatch.setattr(gatewaynode.nft, "delete_table", f.delete_table)
    return f


def sysctl_root(tmp_path: Path, value: str = "0") -> Path:
    path = tmp_path / "net" / "ipv4" / "ip_forward"
    path.parent.mkdir(parents=True)
    path.write_text(value + "\n")
    return path


def test_a_node_without_duties_checks_once_then_never_runs_nft(
    fake: FakeNft, tmp_path: Path
) -> None:
    fwd = sysctl_root(tmp_path)
    node = Forwarding(str(tmp_path))
    for t in range(0, 100, 5):
        node.ensure([], "wire_kube", float(t))
    assert fake.lists == 1 and fake.scripts == []
    assert fwd.read_text().strip() == "0"


def test_duty_turns_forwarding_on_adds_rules_and_undoes_both_when_it_ends(
    fake: FakeNft, tmp_path: Path
) -> None:
    fwd = sysctl_root(tmp_path)
    node = Forwarding(str(tmp_path))
    node.ensure([DUTY], "wire_kube", 0.0)
    assert fwd.read_text() == "1"
    assert len(fake.scripts) == 1 and "snat ip to 172.20.1.11" in fake.scripts[0]
    assert node.gateways == ("vpc-b",)
    # unchanged passes before the resync: no nft at all
    lists = fake.lists
    node.ensure([DUTY], "wire_kube", 1.0)
    node.ensure([DUTY], "wire_kube", RESYNC_INTERVAL_S - 0.1)
    assert fake.lists == lists
    # the resync re-reads the kernel; a flushed table is re-created
    fake.table = Observed()
    node.ensure([DUTY], "wire_kube", RESYNC_INTERVAL_S)
    assert fake.lists == lists + 1 and len(fake.scripts) == 2
    # failover away: the table goes, forwarding goes back to what we found
    node.ensure([], "wire_kube", RESYNC_INTERVAL_S + 1)
    assert fake.scripts[-1] == "delete table ip wirekube\n"
    assert fwd.read_text() == "0"
    assert node.gateways == ()


def test_forwarding_already_on_is_left_on(fake: FakeNft, tmp_path: Path) -> None:
    fwd = sysctl_root(tmp_path, "1")
    node = Forwarding(str(tmp_path))
    node.ensure([DUTY], "wire_kube", 0.0)
    node.ensure([], "wire_kube", 1.0)
    assert fwd.read_text().strip() == "1"


def test_a_failing_nft_is_retried_per_resync_not_per_pass(fake: FakeNft, tmp_path: Path) -> None:
    sysctl_root(tmp_path)
    node = Forwarding(str(tmp_path))
    fake.fail = "Error: Could not process rule: Operation not permitted"
    node.ensure([DUTY], "wire_kube", 0.0)
    lists = fake.lists
    for t in range(1, 10):
        node.ensure([DUTY], "wire_kube", float(t))
    assert fake.lists == lists
    fake.fail = None
    node.ensure([DUTY], "wire_kube", RESYNC_INTERVAL_S)
    assert len(fake.scripts) == 1 and node.applied


def test_teardown_removes_the_table_and_restores_forwarding(fake: FakeNft, tmp_path: Path) -> None:
    fwd = sysctl_root(tmp_path)
    node = Forwarding(str(tmp_path))
    node.ensure([DUTY], "wire_kube", 0.0)
    node.teardown()
    assert not fake.table.table and fwd.read_text() == "0"


def test_gateway_metrics_from_the_node_the_plan_and_the_reporter(
    fake: FakeNft, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysctl_root(tmp_path)
    node = Forwarding(str(tmp_path))
    node.ensure([DUTY], "wire_kube", 0.0)
    snat = next(r for r in node.applied or () if r.purpose == "snat")
    monkeypatch.setattr(gatewaynode.nft, "rule_counters", lambda: {snat.comment: (3, 180)})
    health = ProbeHealth(1).record(True, 1.0)
    reconciler = SimpleNamespace(
        forwarding=node,
        gateways=SimpleNamespace(
            last=GatewayAssignment({"node-b1": (ipaddress.ip_network("172.20.1.0/24"),)}, ())
        ),
        gateway_health=SimpleNamespace(health=lambda: {"vpc-b": health}, writes=4),
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in GatewayCollector(reconciler).collect()  # type: ignore[arg-type]
        for s in family.samples
    }
    assert samples[("wirekube_gateway_active", (("gateway", "vpc-b"),))] == 1.0
    assert samples[("wirekube_gateway_client_routes", (("peer", "node-b1"),))] == 1.0
    labels = (("cidr", "172.20.1.0/24"), ("gateway", "vpc-b"), ("rule", "snat"))
    assert samples[("wirekube_gateway_packets_total", labels)] == 3.0
    assert samples[("wirekube_gateway_bytes_total", labels)] == 180.0
    assert samples[("wirekube_gateway_health", (("gateway", "vpc-b"), ("state", "healthy")))] == 1.0
    assert samples[("wirekube_gateway_health", (("gateway", "vpc-b"), ("state", "unknown")))] == 0.0
    assert samples[("wirekube_gateway_health_reports_total", ())] == 4.0
