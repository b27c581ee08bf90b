"""A real relay or STUN responder with one test-only hook, for test_health_endpoints.py
and the kube wedge test (run in the image with ``python3 -c``).

Usage: python wedgeable_loop.py WEDGE_FILE STALL_S MODULE SERVICE-ARGS...

MODULE is ``wirekube_relay`` or ``wirekube_stunprobe``. While WEDGE_FILE
exists, a task of the service's own event loop blocks it (a synchronous
sleep, as a stuck call would): nothing on the loop runs, while the metrics
server's thread answers on. The liveness bound is set to STALL_S, and the
shutdown bound (how long after SIGTERM a process that cannot stop is ended)
to STALL_S too, so a test need not wait the production 10 s and 20 s. Like
wedgeable_agent.py, this file is in no package and no image.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time

from wirekube_common import heartbeat, supervisor


def wedged_here() -> None:
    time.sleep(0.1)  # blocks the loop


def main() -> int:
    wedge, stall, module, *argv = sys.argv[1:]
    supervisor.SHUTDOWN_BOUND_S = float(stall)
    real_run, real_check = heartbeat.Heartbeat.run, heartbeat.Heartbeat.check

    async def run_and_wedge(self: heartbeat.Heartbeat) -> None:
        async def wedger() -> None:
            while True:
                await asyncio.sleep(0.1)
                while os.path.exists(wedge):
                    wedged_here()

        task = asyncio.get_running_loop().create_task(wedger())
        try:
            await real_run(self)
        finally:
            task.cancel()

    def check(
        self: heartbeat.Heartbeat, now: float | None = None, bound: float = float(stall)
    ) -> tuple[bool, str]:
        return real_check(self, now, bound)

    heartbeat.Heartbeat.run = run_and_wedge  # type: ignore[method-assign]
    heartbeat.Heartbeat.check = check  # type: ignore[method-assign]
    return importlib.import_module(f"{module}.__main__").main(argv) or 0


if __name__ == "__main__":
    sys.exit(main())
