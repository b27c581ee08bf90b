"""The handover's messages and both sides' state machines (pure)."""

from __future__ import annotations

import pytest

from wirekube_agent.handover import protocol as p
from wirekube_agent.handover.protocol import Act, GiverState, TakerState

K1, K2 = b"\x01" * 32, b"\x02" * 32


@pytest.mark.parametrize(
    "msg",
    [
        p.Request(1),
        p.Offer((K1, K2)),
        p.Offer(()),
        p.Refuse("busy"),
        p.Registering(),
        p.Quiet(),
        p.Done(),
    ],
)
def test_messages_round_trip(msg: p.Message) -> None:
    assert p.decode(p.encode(msg)) == msg


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"op": "reboot"},
        {"op": "request"},
        {"op": "offer", "version": 2, "keys": []},
        {"op": "offer", "version": 1, "keys": ["not base64!"]},
        {"op": "offer", "version": 1, "keys": ["AAAA"]},  # 3 bytes, not a key
        {"op": "offer", "version": 1, "keys": [p.encode(p.Offer((K1,)))["keys"][0]] * 2},
    ],
)
def test_malformed_messages_are_refused(obj: object) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode(obj)


def test_fd_chunks_stay_under_the_kernels_limit() -> None:
    assert p.fd_chunks(0) == []
    assert p.fd_chunks(3) == [3]
    assert p.fd_chunks(450) == [200, 200, 50]


def test_giver_offers_once_then_retires_on_done() -> None:
    g = p.Giver()
    assert g.on_request(p.Request(p.VERSION), now=10.0, timeout=30.0) is Act.OFFER
    assert g.state is GiverState.OFFERED and g.deadline == 40.0
    # a second new agent meanwhile is refused
    assert g.on_request(p.Request(p.VERSION), now=11.0) is Act.REFUSE
    assert "offered" in g.refusal
    assert g.on_tick(39.0) is Act.NOTHING
    # the new bridge registers: quiesce, and still wait for done
    assert g.on_message(p.Registering()) is Act.QUIESCE
    assert g.state is GiverState.OFFERED
    assert g.on_message(p.Done()) is Act.RETIRE
    assert g.state is GiverState.RETIRED
    # retired: nothing moves it any more
    assert g.on_tick(1e9) is Act.NOTHING
    assert g.on_message(None) is Act.NOTHING
    assert g.on_request(p.Request(p.VERSION), now=50.0) is Act.REFUSE


@pytest.mark.parametrize("ending", ["eof", "garbage", "timeout"])
def test_giver_resumes_when_the_new_agent_does_not_finish(ending: str) -> None:
    g = p.Giver()
    assert g.on_request(p.Request(p.VERSION), now=0.0, timeout=30.0) is Act.OFFER
    if ending == "eof":
        assert g.on_message(None) is Act.RESUME
    elif ending == "garbage":
        assert g.on_message(p.Request(p.VERSION)) is Act.RESUME
    else:
        assert g.on_tick(30.0) is Act.RESUME
    assert g.state is GiverState.SERVING
    # and the next new agent may ask again
    assert g.on_request(p.Request(p.VERSION), now=31.0) is Act.OFFER


def test_giver_refuses_another_version_and_other_messages() -> None:
    g = p.Giver()
    assert g.on_request(p.Request(p.VERSION + 1), now=0.0) is Act.REFUSE
    assert "version" in g.refusal
    assert g.on_request(p.Done(), now=0.0) is Act.REFUSE
    assert g.state is GiverState.SERVING


def test_taker_holds_an_offer_until_ready_or_overdue() -> None:
    t = p.Taker()
    t.on_reply(p.Offer((K1,)), now=100.0, deadline=20.0)
    assert t.state is TakerState.HOLDING
    assert not t.ready(first_pass_done=False, relay_wanted=True, relay_up=True)
    assert not t.ready(first_pass_done=True, relay_wanted=True, relay_up=False)
    assert t.ready(first_pass_done=True, relay_wanted=True, relay_up=True)
    assert t.ready(first_pass_done=True, relay_wanted=False, relay_up=False)
    assert not t.overdue(119.9) and t.overdue(120.0)
    t.sent_done()
    assert t.state is TakerState.DONE
    assert not t.ready(True, False, False) and not t.overdue(1e9)


def test_taker_deadline_is_shorter_than_the_givers() -> None:
    """A slow new agent exits before the old one resumes: never two agents
    with the data plane."""
    assert p.TAKER_DEADLINE_S < p.GIVER_TIMEOUT_S


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (None, "did not answer"),
        (p.Refuse("already offered"), "refused: already offered"),
        (p.Done(), "unexpected Done"),
    ],
)
def test_taker_starts_alone_without_an_offer(reply: p.Message | None, why: str) -> None:
    t = p.Taker()
    t.on_reply(reply, now=0.0)
    assert t.state is TakerState.ALONE and why in t.why_alone
    with pytest.raises(p.ProtocolError):
        t.on_reply(p.Offer(()), now=1.0)


def test_adopted_sockets_pair_keys_and_descriptors() -> None:
    assert p.adopted_sockets([K1, K2], [7, 9]) == {K1: 7, K2: 9}
    with pytest.raises(p.ProtocolError):
        p.adopted_sockets([K1, K2], [7])
