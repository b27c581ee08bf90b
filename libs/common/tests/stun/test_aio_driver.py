"""StunDriver on a real event loop with an in-memory "network" (no sockets)."""

from __future__ import annotations

import asyncio

from wirekube_common.stun import codec
from wirekube_common.stun.aio import StunDriver
from wirekube_common.stun.codec import MessageClass, Method, StunMessage, XorMappedAddress
from wirekube_common.stun.endpoint import Endpoint
from wirekube_common.stun.timers import RetransmitPolicy

SERVER = Endpoint.parse("192.0.2.1:3478")
LOST = Endpoint.parse("192.0.2.99:3478")
MAPPED = Endpoint.parse("203.0.113.5:4000")
FAST = RetransmitPolicy(0.02, 3, 2)


def test_parallel_answers_and_timeouts() -> None:
    async def go() -> None:
        sent: list[Endpoint] = []
        driver: StunDriver

        def send(data: bytes, dest: Endpoint) -> None:
            sent.append(dest)
            if dest == SERVER:
                req = codec.decode(data)
                reply = codec.encode(
                    StunMessage(
                        Method.BINDING,
                        MessageClass.SUCCESS,
                        req.transaction_id,
                        (XorMappedAddress.of(MAPPED),),
                    )
                )
                asyncio.get_running_loop().call_later(0.005, driver.feed, reply, SERVER)

        driver = StunDriver(send, policy=FAST)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ok, lost = await asyncio.gather(driver.binding(SERVER), driver.binding(LOST))
        elapsed = loop.time() - t0
        assert ok.ok and ok.mapped == MAPPED and ok.source == SERVER
        assert lost.timed_out and lost.transmissions == 3
        assert sent.count(LOST) == 3 and sent.count(SERVER) == 1
        assert FAST.total_timeout() <= elapsed < FAST.total_timeout() + 1.0
        assert driver.client.pending == 0 and driver.client.next_deadline() is None
        driver.close()

    asyncio.run(go())


def test_cancelled_binding_forgets_transaction() -> None:
    async def go() -> None:
        driver = StunDriver(lambda d, e: None, policy=RetransmitPolicy(10, 2, 2))
        task = asyncio.create_task(driver.binding(LOST))
        await asyncio.sleep(0.01)
        assert driver.client.pending == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert driver.client.pending == 0
        driver.close()

    asyncio.run(go())
