"""Status writes when the informer's copy of our own object is stale."""

from wirekube_agent.status.peerstatus import WriteBudget, Written, baseline, should_write
from wirekube_common.crd import PeerStatus

DIRECT = PeerStatus(transport_mode="direct", peer_transports={"node-b": "direct"})
RELAY = PeerStatus(transport_mode="relay", peer_transports={"node-b": "relay"})
BUDGET = WriteBudget()


def test_a_stale_informer_copy_is_not_the_baseline() -> None:
    """Our watch went deaf at resourceVersion 7, showing direct; we then wrote relay."""
    wrote_relay = Written(RELAY, over="7")
    # changed back: compared with what we wrote, so it is written
    assert should_write(baseline(DIRECT, "7", wrote_relay), DIRECT, BUDGET, 100.0)
    # unchanged since our write: not rewritten on every budget refill
    assert not should_write(baseline(DIRECT, "7", wrote_relay), RELAY, BUDGET, 100.0)


def test_the_informer_copy_is_the_baseline_once_it_moved() -> None:
    assert baseline(RELAY, "7", None) == RELAY  # nothing written yet
    wrote_direct = Written(DIRECT, over="7")
    assert baseline(DIRECT, "8", wrote_direct) == DIRECT  # caught up with our write
    # someone else changed our status after our write: theirs is what to correct
    assert baseline(RELAY, "9", wrote_direct) == RELAY
    assert should_write(baseline(RELAY, "9", wrote_direct), DIRECT, BUDGET, 100.0)
