"""The agent's relay bridge in its worker process: traffic, lifetime, replacement,
bad requests. A real relay and real processes; only WireGuard is played by
UDP sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from wirekube_agent.handover.wire import recv_bytes
from wirekube_agent.relay.worker import BridgeWorker, WorkerGone
from wirekube_agent.relaying.manager import RelayManager
from wirekube_agent.relaying.target import RelayTarget
from wirekube_common import wgkey


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_traffic_both_ways_through_a_worker(relay_factory, nodes, h, wg) -> None:
    relay = relay_factory()
    key = wgkey.generate_private_key()
    worker = BridgeWorker(key, wg.getsockname()[1], addresses=[relay.address])
    try:
        a = SimpleNamespace(bridge=worker, wg=wg, pub=wgkey.public_key(key))
        b = nodes(addresses=[relay.address])
        h.pair(a, b)
        h.wait_for(worker.live_replicas, 10, "the worker to register")
        assert b.bridge.pool.wait_live(1, 10)
        name = f"{relay.address[0]}:{relay.address[1]}"
        assert worker.live_replicas() == (name,)
        counters = {"frames_tx": 0, "frames_rx": 0, "drops_tx": 0, "malformed_rx": 0}
        assert worker.links() == {name: {"up": True, "connects": 1, "error": ""} | counters}
        there = h.Flow(a, b).start()
        back = h.Flow(b, a).start()
        h.wait_for(lambda: len(there.received) > 30 and len(back.received) > 30, 10, "flows")
        there.stop()
        back.stop()
        assert there.loss() == 0 and back.loss() == 0
        # what the agent's metrics read: every packet of both flows, counted
        # by the worker's link (wirekube_agent_relay_frames_total)
        counters |= {"frames_tx": there.sent, "frames_rx": back.sent}
        assert worker.links() == {name: {"up": True, "connects": 1, "error": ""} | counters}
        # the endpoint of a peer stays while it stays relayed, as in-process
        endpoint = worker.endpoint_for(b.pub)
        worker.set_relayed_peers({b.pub, b"\x07" * 32})
        assert worker.endpoint_for(b.pub) == endpoint
        worker.set_relayed_peers(set())
        with pytest.raises(KeyError):
            worker.endpoint_for(b.pub)
    finally:
        worker.stop()
    assert not worker.alive


AGENT = textwrap.dedent(
    """
    import sys, time
    from wirekube_agent.relay.worker import BridgeWorker
    w = BridgeWorker(b"\\x01" * 32, 51820, addresses=[("127.0.0.1", int(sys.argv[1]))])
    print(w.pid, flush=True)
    time.sleep(60)
    """
)


def test_the_worker_never_outlives_the_agent(relay_factory) -> None:
    """SIGKILL the agent (no clean-up of any kind): its worker goes too."""
    relay = relay_factory()
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(relay.address[1])], stdout=subprocess.PIPE, text=True
    )
    try:
        assert agent.stdout is not None
        worker_pid = int(agent.stdout.readline())
        assert alive(worker_pid)
        agent.kill()
        agent.wait(5)
        deadline = time.monotonic() + 5
        while alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(worker_pid), "the worker outlived its agent"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)


def test_a_worker_that_dies_is_replaced(relay_factory, nodes, h, wg) -> None:
    """The bridge worker is killed: the pass that notices has no relay endpoints
    (and does not raise), the next one runs on a new worker, and traffic flows."""
    relay = relay_factory()
    b = nodes(addresses=[relay.address])
    manager = RelayManager(wgkey.generate_private_key())
    target = RelayTarget(addresses=(relay.address,))
    try:
        first = manager.ensure(target, wg.getsockname()[1])
        assert first is not None
        assert set(manager.endpoints([b.pub])) == {b.pub}
        os.kill(first.pid, signal.SIGKILL)
        h.wait_for(lambda: not first.alive, 5, "the worker to die")
        assert manager.endpoints([b.pub]) == {}
        assert not manager.available
        second = manager.ensure(target, wg.getsockname()[1])
        assert second is not None and second is not first and second.alive
        endpoints = manager.endpoints([b.pub])
        a = SimpleNamespace(bridge=second, wg=wg, pub=wgkey.public_key(manager.private_key))
        b.bridge.set_relayed_peers({a.pub})
        h.wait_for(lambda: manager.available, 10, "the new worker to register")
        assert endpoints[b.pub] == second.endpoint_for(b.pub)
        flow = h.Flow(a, b).start()
        h.wait_for(lambda: len(flow.received) > 20, 10, "traffic through the new worker")
        flow.stop()
    finally:
        manager.stop()


def test_bad_requests_get_an_error_and_change_nothing(relay_factory, wg) -> None:
    relay = relay_factory()
    worker = BridgeWorker(
        wgkey.generate_private_key(), wg.getsockname()[1], addresses=[relay.address]
    )
    try:
        peer = wgkey.public_key(wgkey.generate_private_key())
        worker.set_relayed_peers({peer})
        endpoint = worker.endpoint_for(peer)
        with pytest.raises(ValueError, match="unknown op"):
            worker._call({"op": "reboot"})
        with pytest.raises(ValueError, match="refused peers"):
            worker._call({"op": "peers", "keys": ["not base64!"]})
        with pytest.raises(ValueError, match="already started"):
            worker._call({"op": "start", "key": "AA==", "wg_port": 1, "addresses": []})
        garbage = b"\xff{ not json"
        worker._sock.sendall(len(garbage).to_bytes(4, "big") + garbage)
        assert "error" in json.loads(recv_bytes(worker._sock) or b"")
        worker.set_relayed_peers({peer})
        assert worker.endpoint_for(peer) == endpoint and worker.alive
    finally:
        worker.stop()


def test_a_worker_that_hangs_is_ended(relay_factory, wg) -> None:
    """A frozen worker (SIGSTOP): the call times out, and the worker is killed,
    so the manager's next pass replaces it instead of waiting on it again."""
    relay = relay_factory()
    worker = BridgeWorker(
        wgkey.generate_private_key(), wg.getsockname()[1], addresses=[relay.address], timeout=0.5
    )
    try:
        os.kill(worker.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(WorkerGone):
            worker.live_replicas()
        assert time.monotonic() - started < 3
        deadline = time.monotonic() + 5
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not worker.alive and worker.exit_code == -signal.SIGKILL
    finally:
        worker.stop()
