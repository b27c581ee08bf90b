"""cleanup.judge: the initContainer removes only stale state, never a healthy interface."""

from __future__ import annotations

from pathlib import Path

from wirekube_agent.cleanup import Found, judge, read_node_key
from wirekube_common import wgkey
from wirekube_common.wireguard.types import DeviceState, PeerState

NODE = wgkey.generate_private_key()
OTHER = wgkey.generate_private_key()
PEER = wgkey.public_key(wgkey.generate_private_key())


def device(key: bytes | None, peers: int = 1) -> DeviceState:
    ps = {PEER: PeerState(public_key=PEER)} if peers else {}
    return DeviceState(private_key=key, listen_port=51820, fwmark=0, peers=ps)


def test_this_nodes_interface_is_kept_with_its_routes_and_rules() -> None:
    for kind in ("wireguard", "tun"):
        assert judge(Found(kind, device(NODE), NODE))[0] == "keep"


def test_an_interface_keyed_with_another_key_is_stale() -> None:
    assert judge(Found("tun", device(OTHER), NODE))[0] == "remove"


def test_without_a_persisted_key_nothing_proves_the_interface_is_ours() -> None:
    assert judge(Found("wireguard", device(NODE), None))[0] == "remove"


def test_a_device_that_does_not_answer_is_stale() -> None:
    assert judge(Found("tun", None, NODE))[0] == "remove"


def test_a_link_of_another_kind_with_our_name_is_removed() -> None:
    assert judge(Found("veth", device(NODE), NODE))[0] == "remove"


def test_no_interface_means_the_rest_is_stale() -> None:
    assert judge(Found(None, None, NODE))[0] == "remove"


def test_a_pristine_device_stays_but_nothing_else_does() -> None:
    # A device the platform made (the lab's stand-in for kernel WireGuard),
    # never configured: the interface stays; rules and tables are not its.
    assert judge(Found("tun", device(None, peers=0), NODE))[0] == "keep-interface"
    assert judge(Found("tun", device(None, peers=1), NODE))[0] == "remove"


def test_the_node_key_is_read_never_created(tmp_path: Path) -> None:
    assert read_node_key(str(tmp_path)) is None
    assert not (tmp_path / "private.key").exists()
    (tmp_path / "private.key").write_text(wgkey.encode(NODE) + "\n")
    assert read_node_key(str(tmp_path)) == NODE
    (tmp_path / "private.key").write_text("garbage\n")
    assert read_node_key(str(tmp_path)) is None
