"""Every NAT kind of the lab, classified through our server and through coturn.

One lab: a host behind each NAT kind (public, full-cone, address-restricted,
port-restricted, symmetric, tcp-only) and a ``stun`` host on the internet
with two addresses running both our ``wirekube-stun-probe`` and Debian's
coturn, each in RFC 5780 mode. From every NAT'd host, three clients run
against both servers:

* our client (``python -m wirekube_common.stun probe``) -- must give the
  expected verdict for the NAT kind, identically through either server;
* Debian's ``stun`` (RFC 3489 classic tests) -- same "Primary:" verdict and
  exit code through either server;
* coturn's ``turnutils_natdiscovery -m -f`` -- same mapping and filtering
  verdicts through either server.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from wirekube_lab.lab import Lab

OURS, OURS_ALT = 3478, 3479
COTURN, COTURN_ALT = 3578, 3579

TOPOLOGY: dict[str, Any] = {
    "name": "stun-interop",
    "networks": {
        "pub": {"nat": "public"},
        "fc": {"nat": "full-cone"},
        "ar": {"nat": "address-restricted"},
        "pr": {"nat": "port-restricted"},
        "sym": {"nat": "symmetric"},
        "tcp": {"nat": "tcp-only"},
    },
    "hosts": {
        "h-pub": {"network": "pub"},
        "h-fc": {"network": "fc"},
        "h-ar": {"network": "ar"},
        "h-pr": {"network": "pr"},
        "h-sym": {"network": "sym"},
        "h-tcp": {"network": "tcp"},
        "stun": {"network": "internet", "role": "stun", "addresses": 2},
    },
}

# (natType, natMapping, natFiltering) our client must report per NAT kind.
EXPECTED = {
    "h-pub": ("cone", "none", "endpoint-independent"),
    "h-fc": ("cone", "endpoint-independent", "endpoint-independent"),
    "h-ar": ("cone", "endpoint-independent", "address-dependent"),
    "h-pr": ("cone", "endpoint-independent", "address-and-port-dependent"),
    "h-sym": ("symmetric", "address-and-port-dependent", "address-and-port-dependent"),
    "h-tcp": ("", "", "blocked"),
}

# What the third-party clients must say (through either server).
STUN_CLIENT_EXPECTED = {
    "h-pub": "Primary: Open",
    "h-fc": "Primary: Independent Mapping, Independent Filter",
    "h-ar": "Primary: Independent Mapping, Address Dependent Filter",
    "h-pr": "Primary: Independent Mapping, Port Dependent Filter",
    "h-sym": "Primary: Dependent Mapping",
}
NATDISCOVERY_EXPECTED = {
    "h-pub": ["Endpoint Independent Mapping", "Endpoint Independent Filtering"],
    "h-fc": ["Endpoint Independent Mapping", "Endpoint Independent Filtering"],
    "h-ar": ["Endpoint Independent Mapping", "Address Dependent Filtering"],
    "h-pr": ["Endpoint Independent Mapping", "Address and Port Dependent Filtering"],
    "h-sym": ["Address and Port Dependent Mapping", "Address and Port Dependent Filtering"],
}


def _wait_stun(lab: Lab, host: str, server: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = lab.exec(
            host,
            [
                sys.executable,
                "-m",
                "wirekube_common.stun",
                "probe",
                "--compact",
                "--server",
                server,
                "--no-filtering",
                "--no-mapping-detail",
                "--rto",
                "0.1",
            ],
            check=False,
        )
        if out.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"no STUN server answering at {server}")


@pytest.fixture(scope="module")
def lab(module_lab_factory) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    lab = module_lab_factory(TOPOLOGY, name="stun-interop")
    a1, a2 = lab.addresses("stun")[:2]
    ours = lab.spawn(
        "stun",
        [
            sys.executable,
            "-m",
            "wirekube_stunprobe",
            "--address",
            a1,
            "--alternate-address",
            a2,
            "--port",
            str(OURS),
            "--alternate-port",
            str(OURS_ALT),
            "--health-address",
            "",
            "--metrics-port",
            "0",
            "--log-format",
            "text",
        ],
        name="stun-probe",
    )
    workdir = lab.host_dir("stun")
    coturn = lab.spawn(
        "stun",
        [
            "turnserver",
            "-n",
            "--stun-only",
            "-L",
            a1,
            "-L",
            a2,
            "-p",
            str(COTURN),
            "--alt-listening-port",
            str(COTURN_ALT),
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--simple-log",
            "-l",
            "stdout",
            "--pidfile",
            str(workdir / "turn.pid"),
            "--userdb",
            str(workdir / "turndb"),
        ],
        name="coturn",
    )
    _wait_stun(lab, "h-pub", f"{a1}:{OURS}")
    _wait_stun(lab, "h-pub", f"{a1}:{COTURN}")
    yield lab
    ours.stop()
    coturn.stop()


def our_client(lab: Lab, host: str, port: int) -> dict[str, Any]:
    a1 = lab.addresses("stun")[0]
    out = lab.exec(
        host,
        [
            sys.executable,
            "-m",
            "wirekube_common.stun",
            "probe",
            "--compact",
            "--server",
            f"{a1}:{port}",
            "--rto",
            "0.2",
        ],
        check=False,
        timeout=60,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def stun_client(lab: Lab, host: str, port: int) -> tuple[int, list[str]]:
    a1 = lab.addresses("stun")[0]
    out = lab.exec(host, ["stun", f"{a1}:{port}"], check=False, timeout=120)
    text = out.stdout + out.stderr
    return out.returncode, re.findall(r"^Primary: .*$", text, flags=re.M)


def natdiscovery(lab: Lab, host: str, port: int) -> list[str]:
    a1 = lab.addresses("stun")[0]
    out = lab.exec(
        host, ["turnutils_natdiscovery", "-m", "-f", "-p", str(port), a1], check=False, timeout=120
    )
    text = out.stdout + out.stderr
    return re.findall(r"^(NAT with .*!|No NAT!.*|.*[Bb]locked.*)$", text, flags=re.M)


@pytest.mark.parametrize("host", list(EXPECTED))
def test_our_client_same_through_ours_and_coturn(lab: Lab, host: str) -> None:
    ours, theirs = our_client(lab, host, OURS), our_client(lab, host, COTURN)
    verdict = (ours["natType"], ours["natMapping"], ours["natFiltering"])
    print(host, verdict, ours["mapped"], f"{ours['elapsedMs']} ms")
    assert verdict == EXPECTED[host]
    assert (theirs["natType"], theirs["natMapping"], theirs["natFiltering"]) == verdict
    if host != "h-tcp":
        public_ip = lab.public_address(host)
        assert ours["mapped"].split(":")[0] == public_ip
        assert theirs["mapped"].split(":")[0] == public_ip


@pytest.mark.parametrize("host", [h for h in EXPECTED if h != "h-tcp"])
def test_stun_client_same_through_ours_and_coturn(lab: Lab, host: str) -> None:
    ours, theirs = stun_client(lab, host, OURS), stun_client(lab, host, COTURN)
    print(host, ours, theirs)
    assert len(ours[1]) == 1 and ours[1][0].startswith(STUN_CLIENT_EXPECTED[host]), ours
    assert ours == theirs


@pytest.mark.parametrize("host", [h for h in EXPECTED if h != "h-tcp"])
def test_natdiscovery_same_through_ours_and_coturn(lab: Lab, host: str) -> None:
    ours, theirs = natdiscovery(lab, host, OURS), natdiscovery(lab, host, COTURN)
    print(host, ours, theirs)
    assert [re.sub(r"^NAT with (.*)!$", r"\1", v) for v in ours] == NATDISCOVERY_EXPECTED[host]
    assert ours == theirs
