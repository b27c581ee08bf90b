"""Two agents' bridges on one node hand the relayed peers over (the bridge
half of wirekube_agent.handover): the old worker exports its sockets, a new
worker starts with them and registers, the old links are closed by the
relay and stay closed, and a 100/s flow each way loses nothing. A real relay
and real worker processes; WireGuard is played by UDP sockets."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from wirekube_agent.relay.worker import BridgeWorker
from wirekube_common import wgkey


def test_a_new_worker_takes_the_sockets_over_without_a_loss(relay_factory, nodes, h, wg) -> None:
    relay = relay_factory()
    key = wgkey.generate_private_key()
    old = BridgeWorker(key, wg.getsockname()[1], addresses=[relay.address])
    new: BridgeWorker | None = None
    try:
        a = SimpleNamespace(bridge=old, wg=wg, pub=wgkey.public_key(key))
        b = nodes(addresses=[relay.address])
        h.pair(a, b)
        h.wait_for(old.live_replicas, 10, "the old worker to register")
        assert b.bridge.pool.wait_live(1, 10)
        endpoint = old.endpoint_for(b.pub)
        there = h.Flow(a, b).start()
        back = h.Flow(b, a).start()
        h.wait_for(lambda: len(there.received) > 30 and len(back.received) > 30, 10, "flows")

        sockets = old.export()
        assert list(sockets) == [b.pub]
        old.quiesce()  # the new bridge registers now (handover.protocol)
        new = BridgeWorker(key, wg.getsockname()[1], addresses=[relay.address], adopted=sockets)
        for fd in sockets.values():
            os.close(fd)  # the new worker has its own copy
        h.wait_for(new.live_replicas, 10, "the new worker to register")
        # the relay closed the old registration, and the old link stays closed
        h.wait_for(lambda: not old.live_replicas(), 10, "the old link to be closed")
        new.set_relayed_peers({b.pub})
        assert new.endpoint_for(b.pub) == endpoint  # WireGuard's endpoint stays valid
        time.sleep(1.5)  # several reconnect backoffs: the old link must not come back
        assert not old.live_replicas()
        assert new.live_replicas()
        old.stop()
        time.sleep(0.5)
        there.stop()
        back.stop()
        print(
            f"\nhandover: a->b lost {there.loss()} of {there.sent}, longest gap "
            f"{there.longest_gap() * 1000:.0f} ms; b->a lost {back.loss()} of {back.sent}, "
            f"longest gap {back.longest_gap() * 1000:.0f} ms"
        )
        assert there.loss() == 0 and back.loss() == 0
        links = new.links()
        assert all(link["up"] and link["connects"] == 1 for link in links.values()), links
    finally:
        old.stop()
        if new is not None:
            new.stop()


def test_resume_after_a_failed_handover_reconnects(relay_factory, nodes, h, wg) -> None:
    """Exported, then the new agent went away: ``resume`` and the old worker's
    links register again when the relay closed them."""
    relay = relay_factory()
    key = wgkey.generate_private_key()
    old = BridgeWorker(key, wg.getsockname()[1], addresses=[relay.address])
    intruder: BridgeWorker | None = None
    try:
        b = nodes(addresses=[relay.address])
        old.set_relayed_peers({b.pub})
        h.wait_for(old.live_replicas, 10, "the old worker to register")
        for fd in old.export().values():
            os.close(fd)
        # a second registration of our key replaces ours; then it goes away
        intruder = BridgeWorker(key, wg.getsockname()[1], addresses=[relay.address])
        h.wait_for(intruder.live_replicas, 10, "the new worker to register")
        h.wait_for(lambda: not old.live_replicas(), 10, "the old link to be closed")
        intruder.stop()
        intruder = None
        time.sleep(0.5)
        assert not old.live_replicas()
        old.resume()
        h.wait_for(old.live_replicas, 10, "the old worker to register again")
    finally:
        old.stop()
        if intruder is not None:
            intruder.stop()
