"""STUN retransmission timing: every value is named and says why it has that value.

RFC 5389 section 7.2.1: a request over UDP is sent, then retransmitted after
RTO, 2*RTO, 4*RTO, ... until ``rc`` transmissions have gone out; after the
last one the client waits ``rm * RTO`` more before declaring a timeout. With
the RFC defaults that is transmissions at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and
31.5 s and failure at 39.5 s.

That is right for the public Internet with unknown servers, and far too slow
for an agent that must publish an endpoint within seconds or for a filtering
test whose *answer* is a timeout. So the policy is a value, and we ship a few
named presets next to the RFC one.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 5389 7.2.1: the initial RTO "SHOULD be greater than 500 ms"; 500 ms is
# the recommended default when nothing is known about the path.
RFC_INITIAL_RTO = 0.5
# RFC 5389 7.2.1: Rc, the number of transmissions, defaults to 7.
RFC_RC = 7
# RFC 5389 7.2.1: Rm, the final wait as a multiple of the initial RTO, defaults to 16.
RFC_RM = 16

# Agent discovery: servers are in (or near) the cluster and a NAT'd node must
# publish an endpoint within the 5 s steady-state budget, so 4 transmissions
# at 200 ms RTO (0, 0.2, 0.6, 1.4 s) with a 0.8 s final wait: a server is
# declared dead after 2.2 s, which still rides out the loss of three packets.
DISCOVERY_INITIAL_RTO = 0.2
DISCOVERY_RC = 4
DISCOVERY_RM = 4

# Filtering tests (RFC 5780 4.4): "no answer" IS the result, so we pay the full
# timeout on every restricted NAT. 3 transmissions (0, 0.2, 0.6 s) and a 0.8 s
# final wait = 1.4 s; a lost reply is unlikely three times in a row on the
# short paths where this runs, and a wrong "restricted" only costs a relay.
FILTER_TEST_INITIAL_RTO = 0.2
FILTER_TEST_RC = 3
FILTER_TEST_RM = 4


@dataclass(frozen=True)
class RetransmitPolicy:
    """``rto`` seconds initial timeout, ``rc`` transmissions, final wait ``rm * rto``."""

    rto: float = RFC_INITIAL_RTO
    rc: int = RFC_RC
    rm: int = RFC_RM

    def __post_init__(self) -> None:
        if self.rto <= 0 or self.rc < 1 or self.rm < 1:
            raise ValueError(f"invalid retransmission policy {self}")

    def schedule(self) -> list[float]:
        """Offsets of every transmission from the first one (first is 0.0)."""
        out, t, interval = [0.0], 0.0, self.rto
        for _ in range(self.rc - 1):
            t += interval
            out.append(t)
            interval *= 2
        return out

    def total_timeout(self) -> float:
        """Seconds from the first transmission until the transaction fails."""
        return self.schedule()[-1] + self.rm * self.rto


RFC_POLICY = RetransmitPolicy()
DISCOVERY_POLICY = RetransmitPolicy(DISCOVERY_INITIAL_RTO, DISCOVERY_RC, DISCOVERY_RM)
FILTER_TEST_POLICY = RetransmitPolicy(FILTER_TEST_INITIAL_RTO, FILTER_TEST_RC, FILTER_TEST_RM)
