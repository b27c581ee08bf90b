"""The real agent with one test-only hook, for test_health_endpoints.py and the
kube wedge test (which runs it in the agent image with ``python3 -c``).

Usage: python wedgeable_agent.py WEDGE_FILE STALL_S AGENT-ARGS...

While WEDGE_FILE exists, every reconcile pass blocks before it starts: the
control loop is wedged while everything else (informers, metrics server, the
data plane) runs on. The liveness bound is set to STALL_S so a test need not
wait the production minute. This file lives under tests/ only: it is in no
package and no image, so the hook cannot reach production.
"""

from __future__ import annotations

import os
import sys
import time

from wirekube_agent import __main__ as agent_main
from wirekube_agent import health, reconciler


def main() -> int:
    wedge, stall, *argv = sys.argv[1:]
    health.LIVENESS_PASS_STALL_S = float(stall)
    real_pass = reconciler.Reconciler.reconcile

    def wedgeable_pass(self: reconciler.Reconciler) -> None:
        while os.path.exists(wedge):
            time.sleep(0.1)
        real_pass(self)

    reconciler.Reconciler.reconcile = wedgeable_pass  # type: ignore[method-assign]
    return agent_main.main(argv)


if __name__ == "__main__":
    sys.exit(main())
