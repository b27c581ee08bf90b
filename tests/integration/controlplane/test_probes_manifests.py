"""Every workload of every overlay is probed on /livez and /readyz of its
metrics port (the shared server in wirekube_common.metrics), nothing probes the
relay's admin gRPC, and the agent's /lib/modules mount cannot keep it from
starting on a node without that directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_manifests import OVERLAYS, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_probe_livez_and_readyz(control_plane: Any, repo: Path, overlay: str) -> None:
    objs = render(control_plane, repo, overlay)
    workloads = [o for (kind, _), o in objs.items() if kind in ("Deployment", "DaemonSet")]
    # the relay is no manifest of any overlay: the controller creates it from the
    # mesh spec (managedrelay/desired.py, probed the same way, unit-tested there)
    names = {o["metadata"]["name"] for o in workloads}
    assert {"wirekube-agent", "wirekube-gateway-controller"} <= names, names
    for obj in workloads:
        for c in obj["spec"]["template"]["spec"]["containers"]:
            where = (obj["metadata"]["name"], c["name"])
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            # The agent (hostNetwork) declares no port: it would be a hostPort,
            # which keeps a surge rollout's new pod off its node; its probes
            # name the port by number.
            port: int | str = 9090 if obj["kind"] == "DaemonSet" else "metrics"
            if obj["kind"] == "DaemonSet":
                assert ports == {}, where
            else:
                assert ports.get("metrics") == 9090, where
            for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
                assert set(c[probe]) - {"initialDelaySeconds", "periodSeconds",
                                        "failureThreshold", "timeoutSeconds"} == {"httpGet"}, where  # fmt: skip
                assert c[probe]["httpGet"] == {"path": path, "port": port}, (where, probe)


def test_lib_modules_is_created_when_missing(control_plane: Any, repo: Path) -> None:
    ds = render(control_plane, repo, "base")[("DaemonSet", "wirekube-agent")]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["lib-modules"]["hostPath"] == {
        "path": "/lib/modules",
        "type": "DirectoryOrCreate",
    }
