import asyncio
import threading

from wirekube_common.wakeup import Wakeup


def test_set_from_another_thread_wakes_the_waiter() -> None:
    async def main() -> bool:
        w = Wakeup()
        waiter = asyncio.create_task(w.wait())
        await asyncio.sleep(0.01)  # the loop is bound now
        threading.Thread(target=w.set).start()
        await asyncio.wait_for(waiter, 2)
        return w.is_set()

    assert asyncio.run(main())


def test_set_before_anyone_waits_is_remembered_and_clear_resets() -> None:
    async def main() -> None:
        w = Wakeup()
        w()  # also callable, as informers' notify hook
        await asyncio.wait_for(w.wait(), 1)
        w.clear()
        assert not w.is_set()

    asyncio.run(main())
