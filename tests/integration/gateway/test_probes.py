"""The gateway controller's /livez and /readyz (wirekube_common.metrics) on a
real process against the real API server, and a wedged reconcile loop failing
/livez; the stall logic itself is unit-tested in
services/gateway-controller/tests/test_probes.py."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from wirekube_lab.polling import wait_for

from .conftest import GatewayEnv

HERE = Path(__file__).resolve().parent
STALL_S = 3.0  # the liveness bound in the wedge test (production: 30 s)


def test_controller_serves_livez_readyz_and_metrics(gateway_env: GatewayEnv) -> None:
    ctl = gateway_env.start_controller("health-a")  # waits for /readyz 200
    status, text = ctl.http("/readyz")
    assert status == 200 and text.rstrip("\n") in ("ok (leader)", "ok (standby)"), text
    status, text = ctl.http("/livez")
    assert status == 200 and text.startswith("ok ("), text
    assert ctl.http("/healthz")[0] == 404
    assert "wirekube_gateway_controller_passes" in ctl.http("/metrics")[1]


def test_a_wedged_reconcile_loop_fails_livez_and_recovers(
    gateway_env: GatewayEnv, tmp_path: Path
) -> None:
    """Passes blocked (election and the metrics server run on): /livez 503
    naming the reconcile loop once the bound has passed; unblocked, 200 again."""
    wedge = tmp_path / "wedge"
    hook = [sys.executable, str(HERE / "wedgeable_controller.py"), str(wedge), str(STALL_S)]
    ctl = gateway_env.start_controller("wedge-a", command=hook)
    wait_for(lambda: ctl.http("/livez")[0] == 200, 30, "live")
    wedge.write_text("")
    started = time.monotonic()
    try:
        wait_for(lambda: ctl.http("/livez")[0] == 503, 30, "livez fails")
        took = time.monotonic() - started
        status, text = ctl.http("/livez")
        assert status == 503 and text.strip() == "stalled: reconcile", text
        assert took >= STALL_S - 1.5, took  # not before the bound
        assert ctl.http("/metrics")[0] == 200
    finally:
        wedge.unlink(missing_ok=True)
    wait_for(lambda: ctl.http("/livez")[0] == 200, 30, "livez back")
    assert ctl.alive
