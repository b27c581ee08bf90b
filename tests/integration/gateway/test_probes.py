"""The gateway controller's /livez and /readyz (wirekube_common.metrics) on a
real process against the real API server; the stall logic itself is
unit-tested in services/gateway-controller/tests/test_probes.py."""

from __future__ import annotations

from .conftest import GatewayEnv


def test_controller_serves_livez_readyz_and_metrics(gateway_env: GatewayEnv) -> None:
    ctl = gateway_env.start_controller("health-a")  # waits for /readyz 200
    status, text = ctl.http("/readyz")
    assert status == 200 and text.rstrip("\n") in ("ok (leader)", "ok (standby)"), text
    status, text = ctl.http("/livez")
    assert status == 200 and text.startswith("ok ("), text
    assert ctl.http("/healthz")[0] == 404
    assert "wirekube_gateway_controller_passes" in ctl.http("/metrics")[1]
