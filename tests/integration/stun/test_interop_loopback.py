"""Interoperability with software we did not write, on loopback.

* our client → Debian's coturn (``turnserver --stun-only`` with RFC 5780);
* Debian's ``stun`` (RFC 3489 client) and coturn's ``turnutils_natdiscovery``
  (RFC 5780 client) → our stun-probe, with the same verdicts as through coturn.

On loopback there is no NAT, so every tool must say so; the NAT kinds are
exercised by ``test_interop_nat.py`` in the network lab.
"""

from __future__ import annotations

import re
import subprocess


def stun_client(port: int) -> tuple[int, str]:
    out = subprocess.run(
        ["stun", f"127.0.0.1:{port}", "-v"], capture_output=True, timeout=60, check=False
    )
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    return out.returncode, text


def natdiscovery(port: int) -> str:
    out = subprocess.run(
        ["turnutils_natdiscovery", "-m", "-f", "-p", str(port), "-L", "127.0.0.1", "127.0.0.1"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")


def verdicts(text: str) -> list[str]:
    return re.findall(r"^(NAT with .*!|No NAT!.*)$", text, flags=re.M)


def test_our_client_against_coturn(coturn, probe_cli) -> None:  # type: ignore[no-untyped-def]
    out = probe_cli("--server", f"127.0.0.1:{coturn.port}", "--local", "127.0.0.1", "--rto", "0.1")
    assert out["natType"] == "cone" and out["natMapping"] == "none"
    assert out["natFiltering"] == "endpoint-independent"
    assert out["rfc5780Server"] == f"127.0.0.1:{coturn.port}"
    results = out["results"]
    first = results[0]  # type: ignore[index]
    assert first["mapped"] == f"127.0.0.1:{out['localPort']}"
    assert first["otherAddress"] == f"127.0.0.2:{coturn.alt_port}"
    assert "Coturn" in (first["software"] or "")
    change = next(r for r in results if r["changeIp"])  # type: ignore[union-attr]
    assert change["source"] == f"127.0.0.2:{coturn.alt_port}"


def test_stun_client_same_verdict_on_ours_and_coturn(stun_probe, coturn) -> None:  # type: ignore[no-untyped-def]
    rc_ours, ours = stun_client(stun_probe.port)
    rc_coturn, theirs = stun_client(coturn.port)
    print(ours.splitlines()[-2:], theirs.splitlines()[-2:])
    assert "Primary: Open" in ours, ours
    assert (rc_ours, re.findall(r"^Primary: .*$", ours, re.M)) == (
        rc_coturn,
        re.findall(r"^Primary: .*$", theirs, re.M),
    )
    # It really used our RFC 3489 CHANGED-ADDRESS.
    assert f"ChangedAddress = 127.0.0.2:{stun_probe.alt_port}" in ours


def test_natdiscovery_same_verdict_on_ours_and_coturn(stun_probe, coturn) -> None:  # type: ignore[no-untyped-def]
    ours, theirs = natdiscovery(stun_probe.port), natdiscovery(coturn.port)
    print(verdicts(ours), verdicts(theirs))
    assert verdicts(ours) == verdicts(theirs)
    assert "NAT with Endpoint Independent Filtering!" in verdicts(ours)
    assert any("Endpoint Independent Mapping" in v for v in verdicts(ours))
    assert f"Other addr: : 127.0.0.2:{stun_probe.alt_port}" in ours
