"""NAT self-test: does every router of a built lab behave like its declared kind?

For every network, one host behind its router (a node if there is one) runs
:mod:`~wirekube_lab.natprobe` against the lab's STUN responder (started on
the first ``stun`` host, which needs two addresses); nodes with
``public_ip`` are probed as well (kind ``one-to-one``). Probes run in
parallel; the verdict compares the classification with
:data:`~wirekube_lab.natbehaviour.EXPECTED` and with the public address the
lab planned for that host.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .addressing import LabPlan
from .natbehaviour import EXPECTED, NatBehaviour, Observations, classify, mismatches

if TYPE_CHECKING:
    from .lab import Lab

RESPONDER_PORT = 3478
RESPONDER_ALT_PORT = 3479


class SelfTestUnavailable(RuntimeError):
    """The topology has no STUN host with two addresses to test against."""


@dataclass(frozen=True)
class Target:
    network: str
    router: str
    kind: str
    host: str


@dataclass(frozen=True)
class SelfTestResult:
    target: Target
    expected_public_ip: str
    behaviour: NatBehaviour | None
    observations: Observations | None
    problems: tuple[str, ...] = field(default=())
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.behaviour is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        udp, tcp, mapping, filtering = EXPECTED[self.target.kind]
        return {
            "network": self.target.network,
            "router": self.target.router,
            "kind": self.target.kind,
            "host": self.target.host,
            "ok": self.ok,
            "expected": {
                "udp": udp,
                "tcp": tcp,
                "mapping": mapping,
                "filtering": filtering,
                "public_ip": self.expected_public_ip,
            },
            "seen": self.behaviour.to_json() if self.behaviour else None,
            "observations": self.observations.to_json() if self.observations else None,
            "problems": list(self.problems),
            "duration_s": round(self.duration_s, 3),
        }


def targets(plan: LabPlan) -> list[Target]:
    """Which host probes which router (pure)."""
    out: list[Target] = []
    for router in plan.routers:
        behind = [h for h in plan.hosts if h.network == router.network]
        plain = [
            h for h in behind if h.public_address == router.wan_address or not router.nat.translates
        ]
        plain.sort(key=lambda h: h.role != "node")
        if plain:
            out.append(Target(router.network, router.name, router.nat.kind, plain[0].name))
        for private, _public in router.one_to_one:
            host = next(h for h in behind if h.address == private)
            out.append(Target(router.network, router.name, "one-to-one", host.name))
    return out


def responder_host(plan: LabPlan) -> str:
    for host in plan.hosts:
        if host.role == "stun" and len(host.addresses) >= 2:
            return host.name
    raise SelfTestUnavailable(
        "the NAT self-test needs a host with role stun and two addresses on the internet"
    )


def run_selftest(lab: Lab, timeout: float = 0.25, retries: int = 3) -> list[SelfTestResult]:
    """Start the responder, probe every router in parallel, stop the responder."""
    plan = lab.plan
    stun = responder_host(plan)
    a1, a2 = lab.addresses(stun)[:2]
    ready = lab.host_dir(stun) / "selftest-responder.ready"
    ready.unlink(missing_ok=True)
    responder = lab.spawn(
        stun,
        [
            sys.executable,
            "-m",
            "wirekube_lab.stunresponder",
            "--address",
            a1,
            "--address",
            a2,
            "--port",
            str(RESPONDER_PORT),
            "--alt-port",
            str(RESPONDER_ALT_PORT),
            "--ready-file",
            str(ready),
        ],
        name="selftest-responder",
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            if not responder.alive or time.monotonic() > deadline:
                raise RuntimeError(f"STUN responder did not start:\n{responder.log_text()}")
            time.sleep(0.01)

        def one(target: Target) -> SelfTestResult:
            t0 = time.monotonic()
            public_ip = lab.public_address(target.host)
            proc = lab.exec(
                target.host,
                [
                    sys.executable,
                    "-m",
                    "wirekube_lab.natprobe",
                    "--server",
                    a1,
                    "--alt-server",
                    a2,
                    "--local-address",
                    lab.address(target.host),
                    "--port",
                    str(RESPONDER_PORT),
                    "--alt-port",
                    str(RESPONDER_ALT_PORT),
                    "--timeout",
                    str(timeout),
                    "--retries",
                    str(retries),
                ],
                check=False,
                timeout=60,
            )
            took = time.monotonic() - t0
            if proc.returncode != 0:
                return SelfTestResult(
                    target, public_ip, None, None, (f"probe failed: {proc.stderr.strip()}",), took
                )
            obs = Observations.from_json(json.loads(proc.stdout))
            seen = classify(obs)
            return SelfTestResult(
                target, public_ip, seen, obs, tuple(mismatches(target.kind, seen, public_ip)), took
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, targets(plan)))
    finally:
        responder.stop()
