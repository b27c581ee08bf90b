"""Locked-down egress in the lab: a node behind a firewall that lets only its
HTTP proxy out, to TCP 443, reaches the mesh through the relay over TLS.

Real everything: kube-apiserver, wirekube-relay serving TCP 3478 and TLS 443
(a CA this lab makes), Debian's tinyproxy with Basic auth on the site's proxy
host, the ``tls-only`` nftables firewall, wirekube-agents with wireguard-go.

* every pair pings (node-1's pairs through the relay, via the proxy);
* the firewall is real: node-1 cannot open TCP to the relay itself, on 443 or
  3478; the proxy host can (443);
* a relay certificate that does not carry the mesh's serverName: every agent
  refuses the relay and logs why; node-1 (relay only) is cut off until the
  name is right again;
* wrong proxy credentials: the agent logs the proxy's 407 status line, keeps
  running and retrying, and comes back as soon as the credentials file (a
  mounted Secret) is right again, without a restart.
"""

from __future__ import annotations

import copy
import re
import sys
import time
from pathlib import Path

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.fixtures.lab import TOPOLOGY_DIR
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshDriver
from wirekube_lab.topology import load_topology

TOPOLOGY = TOPOLOGY_DIR / "tls-egress.yaml"
STEADY_TIMEOUT_S = 90.0
#: The link retries with backoff capped at 5 s; allow two rounds and a start.
REFUSAL_SEEN_S = 30.0
#: Back after the credentials are fixed: one backoff (5 s) + registration + ping.
RECOVER_S = 30.0

#: What the agent logs when the proxy refuses: the proxy's own status line
#: (tinyproxy answers a bad Basic login with 401, squid with 407).
REFUSAL = re.compile(
    r"event=relay-connect-failed relay=\S+:443 transport=tls via=http://\S+:3128 "
    r"error=ProxyRefused: proxy refused the tunnel: HTTP/1\.[01] 40[17] \w+"
)

TCP_PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as exc:
    print("blocked", exc)
else:
    print("open")
"""


def tcp_probe(lab: Lab, host: str, address: str, port: int) -> str:
    out = lab.exec(host, [sys.executable, "-c", TCP_PROBE, address, str(port)], check=False)
    return out.stdout.split(" ")[0].strip()


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_node_behind_a_tls_only_proxy_reaches_everyone(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    topology = load_topology(TOPOLOGY)
    expected = {f"{a}/{b}": mode for (a, b), mode in topology.expect_paths}
    driver = MeshDriver(control_plane)
    with Lab(topology, workdir=tmp_path) as lab:
        try:
            driver.start(lab)
            mesh = driver.mesh
            assert mesh is not None
            steady = driver.wait_steady(lab, STEADY_TIMEOUT_S)
            table = driver.paths(lab)
            pings = driver.pings(lab) or {}
            relay = lab.address("relay")

            # The firewall: only the proxy leaves, only to 443.
            assert tcp_probe(lab, "node-1", relay, 443) == "blocked"
            assert tcp_probe(lab, "node-1", relay, 3478) == "blocked"
            assert tcp_probe(lab, "proxy", relay, 443) == "open"
            assert tcp_probe(lab, "proxy", relay, 3478) == "blocked"

            # node-1's relay link is TLS through the proxy.
            agent_log = mesh.agents["node-1"].log_path.read_text()
            assert f"event=relay-up relay={relay}:443 transport=tls" in agent_log
            proxy_log = mesh.proxies["proxy"].log_path.read_text()
            assert f'Established connection to host "{relay}"' in proxy_log

            # Wrong credentials: a clear refusal, retried, no crash ...
            creds = mesh.proxy_credentials_file("node-1")
            good = creds.read_text()
            creds.write_text("wirekube:wrong-password\n")
            mesh.stop_agent("node-1")
            proc = mesh.start_agent("node-1")
            refused = wait_for(
                lambda: len(REFUSAL.findall(proc.log_path.read_text())) >= 2, REFUSAL_SEEN_S
            )
            refused_log = proc.log_path.read_text()
            alive_while_refused = proc.alive
            # ... and back once the mounted credentials are right again.
            creds.write_text(good)
            back = wait_for(
                lambda: (
                    f"relay={relay}:443 transport=tls" in proc.log_path.read_text()
                    and lab.ping("node-1", "node-2", count=1, wait=1.0).received == 1
                ),
                RECOVER_S,
            )

            # A relay certificate for another name: every agent refuses it, says why.
            relay_spec = copy.deepcopy(lab.mesh_spec()["relay"])
            relay_spec["external"]["serverName"] = "impostor.wirekube.lab"
            marks = {h: len(mesh.agents[h].log_path.read_text()) for h in ("node-1", "node-2")}
            mesh.apply_mesh({"relay": relay_spec})

            def mismatch_logged() -> bool:
                return all(
                    "impostor.wirekube.lab" in _tail(mesh.agents[h].log_path, marks[h])
                    and "Hostname mismatch" in _tail(mesh.agents[h].log_path, marks[h])
                    for h in marks
                )

            mismatch = wait_for(mismatch_logged, REFUSAL_SEEN_S)
            mismatch_log = _tail(mesh.agents["node-1"].log_path, marks["node-1"])
            cut_off = lab.ping("node-1", "node-2", count=3, interval=0.3, wait=1.0).received == 0
            mesh.apply_mesh()  # the right name again
            back_again = wait_for(
                lambda: lab.ping("node-1", "node-2", count=1, wait=1.0).received == 1, RECOVER_S
            )
        finally:
            driver.stop(lab)
    print(
        f"{topology.name}: every pair reachable {driver.reachable_after_s}s, paths final "
        f"{driver.steady_after_s}s after the agents started; pings {pings}"
    )
    assert steady, f"no steady state: {table}"
    assert table == expected
    lost = {
        (a, b): r for a, row in pings.items() for b, r in row.items() if r["received"] < r["sent"]
    }
    assert pings and not lost, f"lost pings: {lost}"
    assert refused, f"no refusal in the agent's log:\n{refused_log[-3000:]}"
    assert "wrong-password" not in refused_log
    assert alive_while_refused
    assert back, "node-1 did not come back after the credentials were fixed"
    assert mismatch, f"no certificate refusal in the agents' logs:\n{mismatch_log[-3000:]}"
    assert "event=relay-connect-failed" in mismatch_log
    assert "certificate verify failed" in mismatch_log
    assert cut_off, "node-1 still reached node-2 with the relay's certificate refused"
    assert back_again, "node-1 did not come back after the right serverName was restored"


def _tail(path: Path, start: int) -> str:
    return path.read_text()[start:]
