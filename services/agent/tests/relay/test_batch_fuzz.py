"""The agent's hot-path RECV_BATCH reader agrees with the sans-IO splitter
(docs/relay-protocol.md, malformed data frames), for any batch body."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_agent.relay.link import batch_entries
from wirekube_common.relayproto import frames as f


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_batch_entries_agree_with_the_strict_splitter(body: bytes) -> None:
    got = list(batch_entries(memoryview(body)))
    try:
        packets = f.split_batch(body)
    except f.ProtocolError:
        # malformed: the entries before the fault are delivered, then None
        assert got and got[-1] is None
        delivered = [bytes(p) for p in got[:-1] if p is not None]
        prefix = sum(2 + len(p) for p in delivered)
        assert delivered == (f.split_batch(body[:prefix]) if prefix else [])
    else:
        assert None not in got and [bytes(p) for p in got if p is not None] == packets


def test_examples() -> None:
    assert list(batch_entries(memoryview(b""))) == [None]  # no entry at all
    assert [bytes(p) if p is not None else None for p in batch_entries(memoryview(b"\0\1a\0"))] == [
        b"a",
        None,
    ]  # a truncated length at the end
    assert [bytes(p) for p in batch_entries(memoryview(b"\0\0\0\1b"))] == [b"", b"b"]  # type: ignore[arg-type]
