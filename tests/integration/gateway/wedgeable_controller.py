"""The real gateway controller with one test-only hook, for test_probes.py and
the kube wedge test (run in the image with ``python3 -c``).

Usage: python wedgeable_controller.py WEDGE_FILE STALL_S CONTROLLER-ARGS...

While WEDGE_FILE exists, every reconcile pass blocks before it starts: the
reconcile loop is wedged while leader election, the informers and the metrics
server run on. The liveness bound is set to STALL_S so a test need not wait
the production 30 s. Like the agent's hook (tests/integration/health), this
file is in no package and no image.
"""

from __future__ import annotations

import os
import sys
import time

from wirekube_gateway import __main__ as controller_main
from wirekube_gateway import metrics
from wirekube_gateway.gateways.reconciler import Controller


def main() -> int:
    wedge, stall, *argv = sys.argv[1:]
    metrics.STALL_S = float(stall)
    real_pass = Controller.reconcile

    def wedgeable_pass(self: Controller) -> None:
        while os.path.exists(wedge):
            time.sleep(0.1)
        real_pass(self)

    Controller.reconcile = wedgeable_pass  # type: ignore[method-assign]
    return controller_main.main(argv)


if __name__ == "__main__":
    sys.exit(main())
