"""The relay bridge's lifecycle: ``RelayManager`` holds the links where the
decided ``RelayTarget`` (``relaying.target``) points.

``resolve_egress`` turns the decided ``EgressConfig`` into the ``Egress`` the
links use (relay/egress.py): the transport (``tcp`` | ``tls``; TLS verifies
the certificate for ``serverName``, default the endpoint's host, against the
agent's ``--relay-ca-file`` or the system store) and the proxy
(``external.proxy``, else ``HTTPS_PROXY``/``NO_PROXY`` of the agent's
environment; credentials in the URL or in ``--relay-proxy-credentials-file``).
``local_egress`` reads the agent's half of that from settings and environment.

``RelayManager`` owns the bridge (and its pool), which runs in a worker
process, and rebuilds it when the target or the WireGuard port changes or
the worker exits. Its ``available`` has hysteresis: a
relay that was live within ``RELAY_LOSS_GRACE_S`` still counts, so a relay
link that drops and reconnects (a NAT in front of the node lost the TCP
flow's mapping) does not move relayed peers off the relay for a pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING

from wirekube_agent.model import FWMARK
from wirekube_agent.relay import DnsSource
from wirekube_agent.relay import ports as relay_ports
from wirekube_agent.relay.egress import Egress, proxy_for
from wirekube_agent.relay.link import LinkStats
from wirekube_agent.relay.worker import BridgeWorker, Spawned, WorkerGone, spawn
from wirekube_agent.relaying.target import DnsName, EgressConfig, LocalEgress, RelayTarget
from wirekube_agent.timers import RELAY_LOSS_GRACE_S

if TYPE_CHECKING:
    from wirekube_agent.settings import Settings

log = logging.getLogger(__name__)

#: What the bridge worker reports of each link (its ``links`` op).
_LINK_FIELDS = fields(LinkStats)

#: The environment variables that choose a proxy (curl's and urllib's names).
PROXY_ENV = ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY")


def local_egress(settings: Settings, environ: Mapping[str, str] | None = None) -> LocalEgress:
    env = os.environ if environ is None else environ
    return LocalEgress(
        ca_file=settings.relay_ca_file,
        proxy_credentials_file=settings.relay_proxy_credentials_file,
        proxy_env=tuple((k, env[k]) for k in PROXY_ENV if env.get(k)),
    )


def resolve_egress(config: EgressConfig | None) -> Egress:
    """The links' ``Egress`` for the decided configuration. Raises ValueError
    (a bad proxy URL)."""
    if config is None:
        return Egress()
    proxy = proxy_for(config.host, config.proxy, dict(config.local.proxy_env))
    tls = config.transport == "tls"
    return Egress(
        transport=config.transport,
        server_name=(config.server_name or config.host) if tls else None,
        ca_file=config.local.ca_file if tls else None,
        proxy=proxy,
        proxy_credentials_file=config.local.proxy_credentials_file if proxy else None,
    )


def _dns_source(name: DnsName | None) -> DnsSource | None:
    if name is None:
        return None
    return DnsSource(name.name, name.port, name.nameservers, name.nameserver_port)


def _describe(target: RelayTarget, e: Egress) -> str:
    where = (
        target.dns.name
        if target.dns is not None
        else ", ".join(f"{h}:{p}" for h, p in target.addresses)
    )
    via = f" via proxy {e.proxy.describe()}" if e.proxy else ""
    return f"{where} ({e.transport}{via})"


class RelayManager:
    """Owns the relay bridge, which runs in a worker process (relay/worker.py
    says why), and restarts that worker if it exits."""

    def __init__(
        self,
        private_key: bytes,
        clock: Callable[[], float] = time.monotonic,
        state_dir: str | None = None,
    ) -> None:
        self.private_key = private_key
        # Each relayed peer's bridge port, kept in the state dir so that the
        # next agent's bridge binds the same ones (relay/ports.py).
        self.state_dir = state_dir
        self._ports: dict[bytes, int] = relay_ports.load(state_dir)
        self._spare: Spawned | None = None  # a worker started ahead (prespawn)
        self.bridge: BridgeWorker | None = None
        self._shape: tuple[RelayTarget, int] | None = None
        self.reason = "not configured yet"
        self._clock = clock
        self._live_at: float | None = None  # last time a replica was seen live
        # Each replica link as ``available`` last saw it (metrics read this).
        self.links: dict[str, LinkStats] = {}
        self.last_available = False
        # The old agent's bridge sockets, taken over (wirekube_agent.handover):
        # the next bridge starts with them. Descriptors we own until then.
        self._adopted: dict[bytes, int] = {}
        # Called just before a bridge with adopted sockets starts (and
        # registers): the old agent's bridge stops reading them (handover).
        self.before_adopted_start: Callable[[], object] | None = None

    def adopt(self, sockets: dict[bytes, int]) -> None:
        """Start the next bridge with these sockets (the old agent's bridge's),
        instead of binding new ones."""
        self._close_adopted()
        self._adopted = dict(sockets)

    def _close_adopted(self) -> None:
        for fd in self._adopted.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._adopted = {}

    def export(self) -> dict[bytes, int]:
        """Our bridge's sockets for a new agent (descriptors the caller owns;
        empty without a bridge); the bridge retires (``resume`` undoes it)."""
        if self.bridge is None:
            return {}
        return self.bridge.export()

    def quiesce(self) -> None:
        """Handing over: our bridge stops reading its sockets (after ``export``)."""
        if self.bridge is not None:
            try:
                self.bridge.quiesce()
            except (WorkerGone, ValueError) as exc:
                log.warning("relay: quiesce failed (%s)", exc)

    def resume(self) -> None:
        if self.bridge is not None:
            try:
                self.bridge.resume()
            except (WorkerGone, ValueError) as exc:
                log.warning("relay: resume failed (%s); starting a new bridge", exc)
                self.stop()

    def ensure(self, target: RelayTarget, wg_port: int) -> BridgeWorker | None:
        if self.bridge is not None and not self.bridge.alive:
            log.warning(
                "relay bridge worker exited (code %s); starting a new one", self.bridge.exit_code
            )
            self.stop()
        shape = (target, wg_port)
        if shape == self._shape:
            return self.bridge
        try:
            egress = resolve_egress(target.egress)
        except ValueError as exc:  # a bad proxy URL: no relay, and why
            target, egress = RelayTarget(reason=str(exc)), Egress()
        if (
            target.configured
            and self.bridge is not None  # a bridge is running ...
            and self._shape is not None
            and self._shape[1] == wg_port  # ... for this WireGuard port
            and self._shape[0].egress == target.egress  # ... leaving the node the same way
        ):
            # Same bridge, new relay addresses: the peers' WireGuard endpoints
            # (the bridge's sockets) stay, and links still wanted stay up.
            try:
                self.bridge.retarget(
                    addresses=target.static_addresses,
                    dns_source=_dns_source(target.dns),
                )
            except (WorkerGone, ValueError) as exc:
                log.warning("relay: retarget failed (%s); starting a new bridge", exc)
            else:
                self._shape = shape
                log.info("relay: now %s", _describe(target, egress))
                return self.bridge
        self.stop()
        if not target.configured:
            self._shape = shape
            self.reason = target.reason
            log.info("no relay: %s", target.reason)
            self._close_adopted()
            return None
        if self._adopted and self.before_adopted_start is not None:
            self.before_adopted_start()
            self.before_adopted_start = None
        try:
            self.bridge = BridgeWorker(
                self.private_key,
                wg_listen_port=wg_port,
                addresses=target.static_addresses,
                dns_source=_dns_source(target.dns),
                fwmark=FWMARK,
                egress=egress,
                ports=self._ports,
                spawned=self._spare,
                adopted=self._adopted,
            )
            self._spare = None
            if self._adopted:
                log.info("relay: the bridge started with %d adopted sockets", len(self._adopted))
        except (WorkerGone, ValueError, OSError) as exc:
            # _shape stays unset: the next pass tries again.
            self.reason = f"the relay bridge did not start: {exc}"
            log.error("relay: %s", self.reason)
            return None
        finally:
            self._close_adopted()  # the worker has its own copies (or failed)
        self._shape = shape
        self.reason = ""
        log.info("relay: %s", _describe(target, egress))
        return self.bridge

    def rekey(self, private_key: bytes) -> None:
        """Our key rotated: the relay links re-register under the new key
        (the bridge and its sockets stay). A bridge that cannot is replaced:
        the next ``ensure`` starts one with the new key."""
        self.private_key = private_key
        if self.bridge is None:
            return
        try:
            self.bridge.rekey(private_key)
        except (WorkerGone, ValueError) as exc:
            log.warning("relay: rekey failed (%s); starting a new bridge", exc)
            self.stop()

    def endpoints(self, keys: Iterable[bytes]) -> dict[bytes, tuple[str, int]]:
        """Give every peer in ``keys`` a bridge socket; where WireGuard must send
        each one's packets to go through the relay. Empty without a bridge."""
        if self.bridge is None:
            return {}
        keys = list(keys)
        try:
            self.bridge.set_relayed_peers(keys)
        except (WorkerGone, ValueError) as exc:
            log.warning("relay: %s", exc)  # ensure() restarts a worker that exited
            return {}
        out = {k: self.bridge.endpoint_for(k) for k in keys}
        ports = {k: port for k, (_, port) in out.items()}
        if ports != self._ports:
            self._ports = ports
            relay_ports.save(self.state_dir, ports)
        return out

    def prespawn(self) -> None:
        """Start the next bridge's worker process now, so that its interpreter
        starts while the agent does (an unused one exits with the agent:
        its socket closes)."""
        if self._spare is None:
            self._spare = spawn()

    def assume_live(self) -> None:
        """Count the relay as live for ``RELAY_LOSS_GRACE_S`` from now: a new
        agent adopting relayed peers from its predecessor's interface keeps
        them on the relay while its own bridge connects, instead of moving
        them to an unproven direct path for a pass."""
        self._live_at = self._clock()

    @property
    def available(self) -> bool:
        """A relay is live, or was within ``RELAY_LOSS_GRACE_S``.

        Without the grace, a pass that ran while the only relay link was
        reconnecting (seen in the lab after a NAT conntrack flush reset it)
        took every relayed peer off the relay to an unproven direct path and
        back on the next pass: routes withdrawn and a status flip for a link
        that was back within a second.
        """
        self.last_available = self._available()
        return self.last_available

    def _available(self) -> bool:
        if self.bridge is None:
            self.links = {}
            return False
        now = self._clock()
        try:
            links = self.bridge.links()
        except (WorkerGone, ValueError):
            links = {}
        self.links = {
            name: LinkStats(**{f.name: link[f.name] for f in _LINK_FIELDS if f.name in link})
            for name, link in links.items()
        }
        if any(link.up for link in self.links.values()):
            self._live_at = now
            self.reason = ""
            return True
        # No replica is up: say why (a proxy's status line, a certificate that
        # does not verify), for the "no relay: ..." of unreachable peers.
        errors = [f"{name}: {link['error']}" for name, link in links.items() if link.get("error")]
        self.reason = "relay unreachable: " + "; ".join(sorted(errors)) if errors else ""
        return self._live_at is not None and now - self._live_at < RELAY_LOSS_GRACE_S

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        self.bridge = None
        self._shape = None
        self._live_at = None
        self.links = {}
        self.last_available = False
