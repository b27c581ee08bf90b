"""Every service's metrics on a running lab, as promtool and a real Prometheus see them.

The lab is ``conftest.py``'s (three nodes: two direct pairs, one relayed pair;
a relay, a STUN server, the gateway controller; Prometheus in mt-home). The
tests run in file order on that one lab.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from wirekube_lab.mesh import peer_name

HOME, CLOUD_A, CLOUD_B = "mt-home", "mt-cloud-a", "mt-cloud-b"
NODES = (HOME, CLOUD_A, CLOUD_B)
SERVICES = {"relay": "mt-relay", "stun-probe": "mt-stun", "gateway-controller": "mt-ctl"}
# Three seconds of 1 s scrapes: a value the service has is in Prometheus by then.
SCRAPE_LAG_S = 3.0
# Two direct attempts of the relayed pair (the lab's 15 s retry interval), and slack.
RELAY_RTT_WAIT_S = 2 * 15 + 5
# Relayed pings: 40 echo requests of 1000 bytes each way.
PING_COUNT, PING_SIZE = 40, 1000
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$node": ".*"}
# Metric names the dashboard and rules may use that no WireKube service exports.
PROMETHEUS_OWN = {"up"}
NAME = re.compile(r"\b(wirekube_[a-z0-9_]+|up)\b(?!\s*\()")


def exported_names(text: str) -> set[str]:
    """Every series name an exposition can produce, empty families included."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "info": ("_info",),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
        names.update(s.name for s in family.samples)
    return names


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )


def test_every_endpoint_passes_promtool(ml: Any) -> None:
    """Agents, relay, STUN server and controller: valid exposition, no lint."""
    hosts = {f"agent {h}": h for h in NODES} | {k: v for k, v in SERVICES.items()}
    for what, host in hosts.items():
        text = ml.exposition(host)
        assert "# TYPE wirekube_" in text, f"{what}: no WireKube metrics\n{text[:500]}"
        check = promtool_check(text)
        assert check.returncode == 0 and not check.stdout.strip(), (
            f"{what}: promtool check metrics:\n{check.stdout}{check.stderr}"
        )


def test_prometheus_scrapes_every_target_and_counts_peers_by_path(ml: Any) -> None:
    expected_up = {f"{job} {host}" for job, ts in ml.targets().items() for host, _ in ts}

    def all_up() -> bool:
        up = ml.query("up == 1")
        seen = {
            f"{r['metric']['job']} {r['metric'].get('node') or _host_of(ml, r['metric'])}"
            for r in up
        }
        return seen == expected_up

    ml.wait_for("every target scraped", all_up, 60)
    # Each agent's view of each peer, summed over the mesh: 2 direct pairs and
    # 1 relayed pair are 4 direct peer ends and 2 relayed ones.
    by_path = ml.wait_for(
        "peer ends by path",
        lambda: (
            v
            if (v := ml.values("sum by (path) (wirekube_peer_path)", "path"))
            == {"direct": 4.0, "relay": 2.0, "down": 0.0}
            else None
        ),
        30,
    )
    assert by_path == {"direct": 4.0, "relay": 2.0, "down": 0.0}
    per_pair = {
        (r["metric"]["node"], r["metric"]["peer"]): r["metric"]["path"]
        for r in ml.query("wirekube_peer_path == 1")
    }
    assert per_pair == {
        (HOME, peer_name(CLOUD_A)): "direct",
        (HOME, peer_name(CLOUD_B)): "direct",
        (CLOUD_A, peer_name(HOME)): "direct",
        (CLOUD_B, peer_name(HOME)): "direct",
        (CLOUD_A, peer_name(CLOUD_B)): "relay",
        (CLOUD_B, peer_name(CLOUD_A)): "relay",
    }
    assert ml.values("sum(wirekube_peer_connected)", "") == {"": 6.0}
    # Direct paths are heartbeat-probed every second: every direct end has an RTT,
    # and the lab's hops are sub-second.
    rtts = ml.wait_for(
        "an RTT for every direct peer end",
        lambda: r if len(r := ml.query('wirekube_peer_rtt_seconds{path="direct"}')) == 4 else None,
        30,
    )
    for r in rtts:
        assert 0 < float(r["value"][1]) < 1.0, r
    # A relayed pair's RTT through the relay comes from its probes at each
    # direct attempt (one per directRetryIntervalSeconds, 15 s here).
    relayed = ml.wait_for(
        "an RTT through the relay for both relayed ends",
        lambda: r if len(r := ml.query('wirekube_peer_rtt_seconds{path="relay"}')) == 2 else None,
        RELAY_RTT_WAIT_S,
    )
    assert {r["metric"]["node"] for r in relayed} == {CLOUD_A, CLOUD_B}
    for r in relayed:
        assert 0 < float(r["value"][1]) < 1.0, r
    # What each node's agent learnt about its NAT.
    nat = {r["metric"]["node"]: r["metric"]["nat_type"] for r in ml.query("wirekube_nat_info")}
    assert nat == {HOME: "cone", CLOUD_A: "symmetric", CLOUD_B: "symmetric"}
    # Both clouds hold a link to the lab's one relay replica.
    links = ml.values("sum by (relay) (wirekube_agent_relay_link_up)", "relay")
    relay = f"{ml.lab.address('mt-relay')}:3478"
    assert links == {relay: 3.0}, links
    # Every peer end has handshaken, within the last few minutes.
    ages = ml.values("time() - wirekube_peer_last_handshake_timestamp_seconds", "peer")
    assert len(ml.query("wirekube_peer_last_handshake_timestamp_seconds")) == 6
    assert all(0 <= age < 300 for age in ages.values()), ages
    # Each direct end came to direct at least once: from the relay, or from
    # down when its direct path was proven before its relay link was up (a
    # loaded host: a clean rehearsal counted 3 relay->direct, not 4).
    upgrades = ml.values('sum by (from) (wirekube_path_changes_total{to="direct"})', "from")
    assert sum(upgrades.values()) >= 4, upgrades
    # The set-up histograms saw every peer's first handshake (6 peer ends).
    assert ml.values("sum(wirekube_peer_time_to_first_handshake_seconds_count)", "") == {"": 6.0}
    assert ml.values("sum(wirekube_peer_time_to_direct_seconds_count)", "") == {"": 4.0}


def _host_of(ml: Any, labels: dict[str, str]) -> str:
    for job_targets in ml.targets().values():
        for host, address in job_targets:
            if address == labels["instance"]:
                return str(host)
    return labels["instance"]


def test_counters_move_with_relayed_traffic(ml: Any) -> None:
    """Pings between the relayed pair show in both agents' byte counters, their
    relay links' packet counters and the relay's, as Prometheus scraped them.
    No scrape crosses that pair (Prometheus is in mt-home), so the growth is
    the pings' and WireGuard keepalives'."""
    tx = f'wirekube_peer_transmit_bytes_total{{node="{CLOUD_A}", peer="{peer_name(CLOUD_B)}"}}'
    rx = f'wirekube_peer_receive_bytes_total{{node="{CLOUD_B}", peer="{peer_name(CLOUD_A)}"}}'
    relayed = "sum(wirekube_relay_bytes_forwarded_total)"
    link_tx = f'sum(wirekube_agent_relay_frames_total{{node="{CLOUD_A}", direction="tx"}})'
    link_rx = f'sum(wirekube_agent_relay_frames_total{{node="{CLOUD_B}", direction="rx"}})'

    def read() -> tuple[float, ...]:
        values = [ml.values(q, "") for q in (tx, rx, relayed, link_tx, link_rx)]
        assert all(len(v) == 1 for v in values), values
        return tuple(next(iter(v.values())) for v in values)

    before = read()
    argv = ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", "0.05", "-s", str(PING_SIZE),
            "-W", "2", ml.lab.address(CLOUD_B)]  # fmt: skip
    out = ml.lab.exec(CLOUD_A, argv, check=False).stdout
    m = re.search(r"(\d+) received", out)
    assert m is not None, out
    received = int(m.group(1))
    assert received >= PING_COUNT * 0.9, f"relayed pings lost: {out}"
    sent_bytes = PING_COUNT * PING_SIZE
    # Every request crossed WireGuard from cloud-a to cloud-b, inside the tunnel
    # with its headers on top; the relay forwarded requests and replies.
    grown = ml.wait_for(
        "counters that grew with the pings",
        lambda: (
            now
            if (now := read())[0] - before[0] >= sent_bytes
            and now[1] - before[1] >= sent_bytes
            and now[2] - before[2] >= 2 * received * PING_SIZE
            # one WireGuard packet per request, out of cloud-a's relay link
            # and into cloud-b's
            and now[3] - before[3] >= received
            and now[4] - before[4] >= received
            else None
        ),
        10 + SCRAPE_LAG_S,
    )
    print(
        f"\nrelayed pings ({received}x{PING_SIZE} B each way): cloud-a tx +{grown[0] - before[0]:.0f} B, "
        f"cloud-b rx +{grown[1] - before[1]:.0f} B, relay forwarded +{grown[2] - before[2]:.0f} B, "
        f"relay link packets: cloud-a tx +{grown[3] - before[3]:.0f}, "
        f"cloud-b rx +{grown[4] - before[4]:.0f}"
    )
    # The same growth through PromQL's counter functions (what the dashboard plots).
    assert float(ml.query(f"increase({tx}[1m])")[0]["value"][1]) >= sent_bytes * 0.9


def substitute(expr: str) -> str:
    """The dashboard's Grafana variables, as Grafana would fill them in."""
    for var, value in DASHBOARD_VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


def _expressions(obj: Any) -> list[str]:
    """Every ``expr`` in a JSON/YAML tree (dashboard targets, alert rules)."""
    if isinstance(obj, dict):
        found = [obj["expr"]] if isinstance(obj.get("expr"), str) else []
        return found + [e for v in obj.values() for e in _expressions(v)]
    if isinstance(obj, list):
        return [e for v in obj for e in _expressions(v)]
    return []


def test_dashboard_and_alerts_use_only_exported_metrics(ml: Any) -> None:
    """Every metric the dashboard and the alert rules name is exported by a
    running service (read from their expositions now, not from a list), and
    every expression evaluates in the real Prometheus."""
    exported = set(PROMETHEUS_OWN)
    for host in [*NODES, *SERVICES.values()]:
        exported |= exported_names(ml.exposition(host))
    dashboard = json.loads((ml.repo / "deploy/monitoring/grafana-dashboard.json").read_text())
    panels = _expressions(dashboard["panels"])
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    rules = _expressions(ml.rule_groups()["groups"])
    assert len(panels) >= 20 and len(rules) >= 8
    missing = {
        f"{name} (in {expr!r})"
        for expr in [*panels, *variables, *rules]
        for name in NAME.findall(expr)
        if name not in exported
    }
    assert not missing, "not exported by any service:\n" + "\n".join(sorted(missing))
    for expr in [*panels, *rules]:
        ml.query(substitute(expr))  # raises unless Prometheus accepts and evaluates it
    # The rules as Prometheus loaded them: every one evaluates without error,
    # and on this healthy lab no critical alert fires.
    loaded = ml.prom("/api/v1/rules")["groups"]
    assert {g["name"] for g in loaded} == {g["name"] for g in ml.rule_groups()["groups"]}
    for group in loaded:
        for rule in group["rules"]:
            assert rule["health"] in ("ok", "unknown"), rule
    firing = [
        a for a in ml.prom("/api/v1/alerts")["alerts"] if a["labels"].get("severity") == "critical"
    ]
    assert not firing, firing


def test_the_monitoring_kustomization_renders(control_plane: Any, ml: Any) -> None:
    """``kubectl apply -k deploy/monitoring`` material, rendered by the pinned
    kubectl: the rule and dashboard objects carry the repository's files."""
    out = control_plane.kubectl("kustomize", str(ml.repo / "deploy/monitoring")).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
    objects = {d["kind"]: d for d in docs if d["kind"] != "PodMonitor"}
    assert set(objects) == {"ConfigMap", "PrometheusRule"}
    assert set(monitors) == {"wirekube", "wirekube-agent"}
    dashboard = objects["ConfigMap"]["data"]["grafana-dashboard.json"]
    assert json.loads(dashboard) == json.loads(
        (ml.repo / "deploy/monitoring/grafana-dashboard.json").read_text()
    )
    assert objects["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {"groups": objects["PrometheusRule"]["spec"]["groups"]} == ml.rule_groups()
    monitor, agent = monitors["wirekube"], monitors["wirekube-agent"]
    assert monitor["jobLabel"] == agent["jobLabel"] == "app.kubernetes.io/name"
    selected = set(monitor["selector"]["matchExpressions"][0]["values"])
    assert selected | {agent["selector"]["matchLabels"]["app.kubernetes.io/name"]} == set(
        ml.targets()
    )
    # the agent declares no container port (a hostPort under hostNetwork):
    # its monitor sets the address itself
    relabel = agent["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["targetLabel"] == "__address__" and relabel["replacement"] == "$1:9090"


def test_a_vanished_peer_leaves_no_series(ml: Any) -> None:
    """Last (it changes the lab): a node leaves the cluster; the other agents
    stop exporting anything about it."""
    gone = peer_name(CLOUD_B)
    assert f'peer="{gone}"' in ml.exposition(HOME)
    ml.mesh.stop_agent(CLOUD_B)
    ml.mesh.delete_node(CLOUD_B)
    for host in (HOME, CLOUD_A):
        ml.wait_for(
            f"{host} forgets {gone}", lambda h=host: f'peer="{gone}"' not in ml.exposition(h), 30
        )
    # And Prometheus sees the peer's series end (marked stale on the next scrape).
    ml.wait_for(
        "no series of the vanished peer",
        lambda: not ml.query(f'{{__name__=~"wirekube_peer_.+", peer="{gone}"}}'),
        10 + SCRAPE_LAG_S,
    )
