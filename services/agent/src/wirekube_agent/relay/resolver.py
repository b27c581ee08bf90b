"""Resolve a relay pool's DNS name (a headless Service) to its replicas.

The only module that imports dnspython: the pool loads it on the first
resolve, so agents with a relay given as an IP address (most of them) never
pay its import (0.12 s of CPU, measured, at an agent start-up that is all CPU).

Queries go over UDP; a name whose UDP query timed out is asked again over TCP
at once, and that resolver keeps asking over TCP: a zone whose firewall lets
only outbound TCP out (the tcp-only zones the relay exists for) can still find
its relays.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence

import dns.exception
import dns.resolver

log = logging.getLogger(__name__)


class ResolveError(Exception):
    """No address could be had for the name (the message says why)."""


class Resolver:
    def __init__(self, nameservers: Sequence[str], port: int, timeout: float) -> None:
        self._res = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._res.nameservers = list(nameservers)
            self._res.port = port
        self._res.lifetime = timeout
        self.tcp = False  # UDP timed out once: stay on TCP

    def resolve(
        self, name: str, port: int, known: Iterable[tuple[str, int]] = ()
    ) -> list[tuple[str, int]]:
        """Every A and AAAA address of ``name`` with ``port``, sorted.

        ``known``: the replicas in use; those of a record type whose query
        failed are kept (dnsmasq answers REFUSED to AAAA for a name that has
        only A records: that must not hide the A answer, nor drop replicas).
        """
        try:
            socket.inet_pton(socket.AF_INET, name)
            return [(name, port)]
        except OSError:
            pass
        known = list(known)
        out: list[tuple[str, int]] = []
        failed: list[str] = []
        for rtype, family in (("A", socket.AF_INET), ("AAAA", socket.AF_INET6)):
            try:
                answer = self._query(name, rtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException as exc:
                failed.append(f"{rtype}: {exc}")
                out.extend(a for a in known if _family(a[0]) == family)
                continue
            out.extend((r.to_text(), port) for r in answer)
        if not out:
            raise ResolveError("; ".join(failed) or f"{name}: no A/AAAA records")
        if failed:
            log.warning("event=relay-resolve-partial name=%s error=%s", name, "; ".join(failed))
        return sorted(set(out))

    def _query(self, name: str, rtype: str) -> dns.resolver.Answer:
        if not self.tcp:
            try:
                return self._res.resolve(name, rtype)
            except dns.exception.Timeout:
                log.info("event=relay-resolve-tcp name=%s reason=udp-timeout", name)
                self.tcp = True
        return self._res.resolve(name, rtype, tcp=True)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
