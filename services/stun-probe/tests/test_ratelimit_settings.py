from __future__ import annotations

import ipaddress

import pytest

from wirekube_stunprobe.ratelimit import SourceLimiter, TokenBucket, Verdict
from wirekube_stunprobe.settings import parse


def limiter(**kw: float) -> SourceLimiter:
    args = dict(
        rate=10.0,
        burst=5.0,
        global_rate=1000.0,
        global_burst=1000.0,
        max_sources=3,
        idle_seconds=30.0,
        now=0.0,
    )
    args.update(kw)
    return SourceLimiter(**args)  # type: ignore[arg-type]


def test_bucket_refills_at_rate() -> None:
    b = TokenBucket.full(10, 5, 0.0)
    assert [b.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not b.take(0.05)
    assert b.take(0.1)
    assert b.tokens == pytest.approx(0.0)
    b.refill(100.0)
    assert b.tokens == 5


def test_per_source_and_global() -> None:
    lim = limiter()
    a, b = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")
    verdicts = [lim.allow(a, 0.0) for _ in range(6)]
    assert verdicts == [Verdict.ALLOW] * 5 + [Verdict.SOURCE_LIMITED]
    assert lim.allow(b, 0.0) is Verdict.ALLOW  # another source is unaffected
    g = limiter(global_rate=1, global_burst=2, burst=100)
    assert [g.allow(a, 0.0) for _ in range(3)] == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.GLOBAL_LIMITED,
    ]


def test_table_bounded_and_pruned() -> None:
    lim = limiter()
    for i in range(10):
        lim.allow(ipaddress.ip_address(f"10.0.0.{i}"), float(i))
    assert len(lim) == 3
    assert lim.prune(38.5) == 2 and len(lim) == 1


def test_settings_flags_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse(["--address", "192.0.2.1", "--alternate-address", "192.0.2.2"])
    assert s.table.rfc5780 and str(s.table.address((1, 1))) == "192.0.2.2:3479"
    monkeypatch.setenv("WIREKUBE_STUN_PORT", "5000")
    monkeypatch.setenv("WIREKUBE_STUN_TCP", "false")
    s = parse([])
    assert s.table.primary.port == 5000 and not s.tcp and not s.table.rfc5780
    assert parse(["--port", "6000"]).table.primary.port == 6000  # flag beats env
    for bad in (
        ["--alternate-address", "192.0.2.2"],  # wildcard primary
        ["--address", "192.0.2.1", "--alternate-address", "2001:db8::1"],
        ["--address", "192.0.2.1", "--alternate-address", "192.0.2.2", "--alternate-port", "5000"],
        ["--log-format", "xml"],
    ):
        with pytest.raises(SystemExit):
            parse(bad)
