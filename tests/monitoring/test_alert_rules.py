"""deploy/monitoring's PrometheusRule: valid rules, and each alert fires when
it should and not otherwise (``promtool test rules``, Debian's prometheus).

The PrometheusRule's ``spec.groups`` is a plain Prometheus rules file; the
test extracts it, so the manifest stays the single source.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def groups() -> dict[str, Any]:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return {"groups": doc["spec"]["groups"]}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def test_rules_are_valid_and_every_alert_is_unit_tested(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups(), sort_keys=False))
    check = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    alerts = {r["alert"] for g in groups()["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert alerts == tested, f"untested: {alerts - tested}, unknown: {tested - alerts}"
    # Every alert says how bad it is and what happened.
    for g in groups()["groups"]:
        for rule in g["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_alerts_fire_as_specified(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups(), sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yaml")
    result = promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kustomization_ships_the_rule_monitor_and_dashboard() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"podmonitor.yaml", "prometheusrule.yaml"}
    files = kustomization["configMapGenerator"][0]["files"]
    assert all((MONITORING / f).is_file() for f in [*kustomization["resources"], *files])
