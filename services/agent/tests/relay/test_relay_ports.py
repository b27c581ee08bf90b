"""relay/ports and RelayBridge(ports=): a new bridge binds its predecessor's ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from wirekube_agent.relay import ports
from wirekube_agent.relay.bridge import RelayBridge
from wirekube_agent.relay.pool import RelayPool

K1, K2 = b"\x01" * 32, b"\x02" * 32


def test_ports_round_trip_and_bad_files_are_no_worse_than_none(tmp_path: Path) -> None:
    assert ports.load(str(tmp_path)) == {}
    ports.save(str(tmp_path), {K1: 40001, K2: 40002})
    assert ports.load(str(tmp_path)) == {K1: 40001, K2: 40002}
    (tmp_path / ports.FILE).write_text("{not json")
    assert ports.load(str(tmp_path)) == {}
    (tmp_path / ports.FILE).write_text('{"!!": 1}')
    assert ports.load(str(tmp_path)) == {}
    assert ports.load(None) == {}
    ports.save(None, {K1: 1})  # no state dir: nothing kept, no error
    assert not os.path.exists(os.path.join(str(tmp_path), ports.FILE + ".tmp"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_new_bridge_binds_the_same_port_per_key_where_free() -> None:
    wanted = _free_port()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    busy = taken.getsockname()[1]
    bridge = RelayBridge(
        b"\x09" * 32,
        wg_listen_port=_free_port(),
        relay_pool=RelayPool(b"\x09" * 32, addresses=[]),
        ports={K1: wanted, K2: busy},
    )
    bridge.start()
    try:
        bridge.set_relayed_peers([K1, K2])
        assert bridge.endpoint_for(K1) == ("127.0.0.1", wanted)
        port2 = bridge.endpoint_for(K2)[1]
        assert port2 not in (0, busy)  # taken by someone else: any other port
    finally:
        bridge.stop()
        taken.close()
