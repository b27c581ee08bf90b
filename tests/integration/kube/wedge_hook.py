"""Run inside the agent container by test_wedged_agent (passed with ``python -c``).

The real agent from the image, with one test-only hook: while WEDGE_FILE
exists, every reconcile pass blocks before it starts, so the control loop is
wedged while the metrics server (/livez) and everything else run on; the
liveness bound is STALL_S. The file lives on the node's /var/lib/wirekube
(a hostPath), so the test wedges one node's agent by creating it there. This
file is in no package and no image: the hook cannot reach production.

argv: WEDGE_FILE STALL_S [AGENT-ARGS...]
"""

import os
import sys
import time

from wirekube_agent import __main__ as agent_main
from wirekube_agent import health, reconciler

wedge, stall, *argv = sys.argv[1:]
health.LIVENESS_PASS_STALL_S = float(stall)
real_pass = reconciler.Reconciler.reconcile


def wedgeable_pass(self: reconciler.Reconciler) -> None:
    while os.path.exists(wedge):
        time.sleep(0.1)
    real_pass(self)


reconciler.Reconciler.reconcile = wedgeable_pass  # type: ignore[method-assign]
sys.exit(agent_main.main(argv))
