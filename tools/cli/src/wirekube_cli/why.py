"""``wirekubectl why A B``: why a pair takes the path it takes, in plain words,
and what would change it. Pure: a ``PairView`` (both agents' published rule,
reason, failures, timers and probe results), the mesh spec, ``now`` and the
pair's Events in; an ``Explanation`` out (rendered as text or JSON).

The rule and reason are the agents' own (``status.peerPaths``, set by the
same decision that chose the path); this module only puts them into words.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from wirekube_cli.mesh import NodeView, PairView
from wirekube_common.crd import MeshSpec, PeerPath
from wirekube_common.kube.times import parse_time

ENDPOINT_ANNOTATION = "wirekube.io/endpoint"


@dataclass(frozen=True)
class Explanation:
    a: str
    b: str
    state: str  # direct | relay | mixed | down
    rule: str
    reason: str
    summary: str
    because: list[str] = field(default_factory=list)
    would_change: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    failures: int = 0
    since: str | None = None
    next_attempt_in_s: float | None = None
    rtt_ms: float | None = None
    relay: str | None = None
    history: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return None


def clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%S")


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"


def nat_words(n: NodeView) -> str:
    """One node's reachability, as a clause: "node-2 is behind a symmetric NAT"."""
    if n.nat_mapping == "none":
        return f"{n.node} has a public address (no NAT)"
    if n.nat_filtering == "blocked":
        return f"{n.node} is in a network that lets no UDP out (TCP only)"
    if n.nat_type == "symmetric":
        return f"{n.node} is behind a symmetric NAT (a new public port for every destination)"
    if n.nat_type == "cone":
        filtering = n.nat_filtering or "unknown"
        return f"{n.node} is behind a cone NAT (one public port for all destinations; {filtering} filtering)"
    return f"{n.node} has not determined its NAT type yet (no STUN answer so far)"


def _rule_sentences(
    rule: str, a: NodeView, b: NodeView, spec: MeshSpec
) -> tuple[list[str], list[str]]:
    port = spec.listen_port
    if rule == "same-network":
        ip = a.public_ip or b.public_ip
        return (
            [f"{a.node} and {b.node} leave through the same public address ({ip}): they share a "
             "network and talk over their internal addresses"],
            [],
        )  # fmt: skip
    if rule == "public":
        pub, other = (a, b) if a.nat_mapping == "none" else (b, a)
        return (
            [f"{pub.node} has a public address, so {other.node} can always reach it directly"],
            [],
        )
    if rule == "cone-cone":
        return (
            [f"{nat_words(a)}, and {nat_words(b)}",
             "both keep one public port for all destinations, so probing each other at the same "
             "moment opens both NATs (hole punching)"],
            [],
        )  # fmt: skip
    if rule == "cone-symmetric":
        sym, cone = (a, b) if a.nat_type == "symmetric" else (b, a)
        return (
            [f"{nat_words(sym)}, and {nat_words(cone)}",
             f"{cone.node}'s NAT lets {sym.node}'s new port in once {cone.node} has sent to "
             f"{sym.node}'s address, so {sym.node} initiates to {cone.node}'s stable endpoint"],
            [],
        )  # fmt: skip
    if rule == "symmetric-port-restricted":
        sym, cone = (a, b) if a.nat_type == "symmetric" else (b, a)
        return (
            [f"{nat_words(sym)}, and {nat_words(cone)}",
             f"{sym.node}'s NAT picks a port for {cone.node} that nobody can predict, and "
             f"{cone.node}'s NAT drops packets from any port it has not sent to"],
            [f"loosen {cone.node}'s NAT filtering to address-dependent (or endpoint-independent)",
             f"or give either node a public endpoint: a public IP, or a UDP port {port} forward "
             f"published with the Node annotation {ENDPOINT_ANNOTATION}"],
        )  # fmt: skip
    if rule == "symmetric-symmetric":
        return (
            [f"{a.node} is behind a symmetric NAT and {b.node} too",
             "direct needs one side with an endpoint-independent mapping (a cone NAT, a public "
             "IP or a forwarded port); two symmetric NATs never learn each other's ports"],
            [f"give one of them a public endpoint: a public IP, or a UDP port {port} forward "
             f"published with the Node annotation {ENDPOINT_ANNOTATION}",
             "or put one of them behind a NAT with endpoint-independent mapping"],
        )  # fmt: skip
    if rule == "tcp-only":
        blocked = [n.node for n in (a, b) if n.nat_filtering == "blocked"] or [a.node]
        who = " and ".join(blocked)
        return (
            [f"{who}: the network lets no UDP out (STUN got no answer over UDP; filtering "
             "blocked); WireGuard's UDP can only leave through the TCP relay"],
            [f"allow outbound UDP (to port {port} and the STUN servers) from {who}'s network"],
        )  # fmt: skip
    missing = [
        f"{n.node}'s {what}"
        for n in (a, b)
        for what, value in (("NAT type", n.nat_type), ("mapping", n.nat_mapping),
                            ("filtering", n.nat_filtering))
        if not value and n.nat_mapping != "none" and n.nat_filtering != "blocked"
    ]  # fmt: skip
    return (
        [f"{nat_words(a)}; {nat_words(b)}",
         "the published NAT facts do not decide this pair"
         + (f" (not known: {', '.join(missing)})" if missing else "")
         + ", so probing alone decides"],
        ["check that the nodes reach the STUN servers of WireKubeMesh default "
         "(wirekubectl doctor, run where the nodes are)"],
    )  # fmt: skip


def _pick(pair: PairView) -> PeerPath | None:
    """The end whose entry says most: failures first, then any entry."""
    paths = [p for p in (pair.a_path, pair.b_path) if p is not None]
    if not paths:
        return None
    return max(paths, key=lambda p: (p.failures, p.transport == "relay"))


def next_attempt_in(paths: Sequence[PeerPath], spec: MeshSpec, now: float) -> float | None:
    """Seconds to the next direct attempt of either end. A published time in
    the past (the status is refreshed about once a minute) is carried forward
    by the retry interval."""
    best: float | None = None
    interval = float(spec.relay.direct_retry_interval_seconds)
    for p in paths:
        at = ts(p.next_attempt)
        if p.transport != "relay" or at is None:
            continue
        if at < now and interval > 0:
            at += math.ceil((now - at) / interval) * interval
        left = max(0.0, at - now)
        best = left if best is None else min(best, left)
    return best


def relay_name(spec: MeshSpec) -> str:
    relay = spec.relay
    if relay.external is not None:
        return f"relay {relay.external.endpoint}"
    if relay.provider == "managed":
        return "the managed relay"
    return "the relay"


def explain(
    pair: PairView, spec: MeshSpec, now: float, events: Sequence[tuple[float, str]] = ()
) -> Explanation:
    a, b = pair.a, pair.b
    chosen = _pick(pair)
    rule = chosen.rule if chosen else "unknown"
    reason = chosen.reason if chosen else ""
    because, change = _rule_sentences(rule, a, b, spec)
    details: list[str] = []
    paths = [p for p in (pair.a_path, pair.b_path) if p is not None]
    since = min(
        (t for p in paths if p.transport == pair.state and (t := ts(p.since))), default=None
    )
    nxt = next_attempt_in(paths, spec, now)
    failures = max((p.failures for p in paths), default=0)
    relay = relay_name(spec)
    timeout = spec.relay.handshake_timeout_seconds
    interval = spec.relay.direct_retry_interval_seconds
    when = f" since {clock(since)} ({ago(now - since)} ago)" if since else ""
    nxt_words = (
        ("a direct attempt is due now" if nxt < 1 else f"next direct attempt in {int(nxt)} s")
        if nxt is not None
        else ""
    )

    if pair.state == "direct":
        endpoints = ", ".join(
            f"{x.node} -> {p.endpoint}"
            for x, p in ((a, pair.a_path), (b, pair.b_path))
            if p and p.endpoint
        )
        rtt = f", RTT {pair.rtt_ms} ms" if pair.rtt_ms is not None else ""
        summary = f"{a.node} <-> {b.node}: direct{when}{rtt}"
        if reason == "probe-answered":
            because.append(
                "a probe from WireGuard's own port was answered on the direct path"
                + (f" ({endpoints})" if endpoints else "")
            )
        elif reason in ("mode-never", "no-relay"):
            because.append(_mode_sentence(reason))
        change.append(
            f"nothing to do; it falls back to {relay} if probes go unanswered for "
            f"handshakeTimeoutSeconds ({timeout} s)"
        )
    elif pair.state == "relay":
        rtt = f", RTT {pair.rtt_ms} ms" if pair.rtt_ms is not None else ""
        summary = f"{a.node} <-> {b.node}: relayed through {relay.removeprefix('the ')}{when}{rtt}"
        if nxt_words:
            summary += f", {nxt_words}"
        if reason == "direct-failed":
            because.append(
                f"a direct path worked before and died {failures} time(s): its probes went "
                f"unanswered for handshakeTimeoutSeconds ({timeout} s)"
            )
            # It worked, so the NATs allow it: something on the way changed.
            change.insert(0, "direct worked between them before: something on the way now "
                          "drops UDP (a firewall rule, a NAT that lost its mappings); once it "
                          "passes again the next attempt goes direct")  # fmt: skip
        elif reason == "predicted-relay":
            because.append(
                f"so the agents expect no direct path; they still try one every "
                f"directRetryIntervalSeconds ({interval} s)"
            )
        elif reason == "probing":
            because.append("direct probes have not been answered (yet)")
        elif reason == "mode-always":
            because.append(_mode_sentence(reason))
            change = ["set spec.relay.mode: auto in WireKubeMesh default to allow direct paths"]
        if nxt_words and reason != "mode-always":
            change.append(f"the agents try direct again by themselves: {nxt_words}")
    elif pair.state == "mixed":
        summary = (
            f"{a.node} <-> {b.node}: in transition ({a.node} uses {pair.a_transport}, "
            f"{b.node} uses {pair.b_transport}); the ends agree within seconds"
        )
    else:
        missing = [x.node for x, t in ((a, pair.a_transport), (b, pair.b_transport)) if t is None]
        summary = f"{a.node} <-> {b.node}: down ({' and '.join(missing)} has no working path)"
        if reason in ("mode-never", "no-relay"):
            because.append(_mode_sentence(reason))
            change.append("configure a relay (spec.relay in WireKubeMesh default) as a fallback")
        else:
            change.append(f"run wirekubectl doctor {a.node} and wirekubectl doctor {b.node}")

    for x, p in ((a, pair.a_path), (b, pair.b_path)):
        if p is None:
            details.append(f"{x.node} has published no path to {pair.b.node if x is a else a.node}")
            continue
        tried = "; ".join(
            f"{c.endpoint} "
            + (f"answered {ago(now - t)} ago" if (t := ts(c.last_answer)) else "no answer")
            for c in p.candidates
        )
        rtt = f", probe RTT {p.rtt_ms} ms" if p.rtt_ms is not None else ""
        details.append(
            f"{x.node}: {p.transport} {p.phase} (rule {p.rule}, reason {p.reason}"
            + (f", {p.failures} failures" if p.failures else "")
            + f"{rtt})"
            + (f"; candidates: {tried}" if tried else "")
        )
    history = [f"{clock(t)} {text}" for t, text in events]
    return Explanation(
        a=a.node,
        b=b.node,
        state=pair.state,
        rule=rule,
        reason=reason,
        summary=summary,
        because=because,
        would_change=change,
        details=details,
        failures=failures,
        since=dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if since
        else None,
        next_attempt_in_s=round(nxt, 1) if nxt is not None else None,
        rtt_ms=pair.rtt_ms,
        relay=relay if pair.state == "relay" else None,
        history=history,
    )


def _mode_sentence(reason: str) -> str:
    return {
        "mode-always": "the mesh's relay.mode is always: every pair uses the relay",
        "mode-never": "the mesh's relay.mode is never: direct only, no fallback",
        "no-relay": "no relay is configured or reachable: direct only, no fallback",
    }[reason]


def pair_events(
    events_a: Sequence[dict[str, Any]], events_b: Sequence[dict[str, Any]], a_peer: str, b_peer: str
) -> list[tuple[float, str]]:
    """The PathChanged Events of either end about the other, oldest first."""
    out: list[tuple[float, str]] = []
    for items, other in ((events_a, b_peer), (events_b, a_peer)):
        for e in items:
            message = str(e.get("message") or "")
            if e.get("reason") != "PathChanged" or not message.startswith(f"{other}:"):
                continue
            at = ts(str(e.get("lastTimestamp") or e.get("eventTime") or ""))
            owner = str((e.get("involvedObject") or {}).get("name", ""))
            if at is not None:
                out.append((at, f"{owner} -> {message}"))
    return sorted(out)


def render(x: Explanation) -> str:
    lines = [x.summary]
    if x.because:
        lines.append("because:")
        lines += [f"  - {s}" for s in x.because]
    if x.would_change:
        lines.append("what would change it:")
        lines += [f"  - {s}" for s in x.would_change]
    if x.details:
        lines.append("as the agents see it:")
        lines += [f"  {s}" for s in x.details]
    if x.history:
        lines.append("path changes:")
        lines += [f"  {s}" for s in x.history[-10:]]
    return "\n".join(lines) + "\n"
