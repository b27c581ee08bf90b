"""The event-loop heartbeat behind the relay's and STUN responder's /livez."""

from __future__ import annotations

import asyncio

from wirekube_common.heartbeat import HEARTBEAT_INTERVAL_S, LOOP_STALL_S, Heartbeat


def test_check_follows_the_last_stamp() -> None:
    hb = Heartbeat(clock=lambda: 100.0)
    assert hb.check(now=1e6) == (True, "event loop starting")
    hb.last = 100.0
    assert hb.check(now=100.0 + LOOP_STALL_S)[0]
    ok, why = hb.check(now=101.0 + LOOP_STALL_S)
    assert not ok and why.startswith("event loop unresponsive for 11s")


def test_a_blocked_loop_stops_stamping() -> None:
    async def scenario() -> tuple[float, float]:
        hb = Heartbeat()
        task = asyncio.create_task(hb.run())
        await asyncio.sleep(HEARTBEAT_INTERVAL_S * 1.5)
        assert hb.last is not None
        stamped = hb.last
        import time  # noqa: PLC0415

        time.sleep(HEARTBEAT_INTERVAL_S * 1.5)  # blocks the loop: no stamp meanwhile
        frozen = hb.last
        task.cancel()
        return stamped, frozen

    stamped, frozen = asyncio.run(scenario())
    assert frozen == stamped
