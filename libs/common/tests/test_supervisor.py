import asyncio
import random

import pytest

from wirekube_common import supervisor
from wirekube_common.retry import MAX_BACKOFF_S, backoff_delays


async def forever(log: list[str], name: str) -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        log.append(f"{name} stopped")


def test_first_failure_stops_all_and_raises() -> None:
    log: list[str] = []

    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("watch died")

    async def main() -> None:
        await supervisor.run({"a": lambda: forever(log, "a"), "boom": boom})

    with pytest.raises(supervisor.TaskFailed, match="boom"):
        asyncio.run(main())
    assert log == ["a stopped"]


def test_a_task_that_returns_is_a_failure_too() -> None:
    async def quits() -> None:
        return None

    with pytest.raises(supervisor.TaskFailed, match="returned"):
        asyncio.run(supervisor.run({"quits": quits}))


def test_stop_event_is_a_clean_shutdown() -> None:
    log: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, stop.set)
        await supervisor.run({"a": lambda: forever(log, "a")}, stop=stop)

    asyncio.run(main())
    assert log == ["a stopped"]


def test_backoff_is_bounded_and_jittered() -> None:
    delays = backoff_delays(rng=random.Random(1))
    values = [next(delays) for _ in range(50)]
    assert all(0 <= v <= MAX_BACKOFF_S for v in values)
    assert max(values[-10:]) > 1.0  # it does grow
