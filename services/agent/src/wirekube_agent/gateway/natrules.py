"""The active gateway node's nftables rules, as values. Pure.

When this node is the active peer of a WireKubeGateway
(``wirekube_common.gateway.duties_for``) it forwards traffic arriving from the
tunnel to the gateway's ``spec.routes`` and, with ``spec.snat.enabled``,
rewrites its source so the routed network needs no route back into the mesh.

Everything lives in one table of our own, ``table ip wirekube``, with two base
chains; we never touch another table (iptables, kube-proxy, the CNI):

* ``forward`` (filter hook, policy accept): per route CIDR, accept
  ``iif <tunnel> -> cidr`` and the established/related replies
  ``cidr -> oif <tunnel>``. An accept in nftables is final only for its own
  base chain, so these rules do not open anything a host firewall drops in its
  own chain (Docker's iptables FORWARD policy, say): they state the purpose,
  and their counters show the gateway's traffic.
* ``postrouting`` (nat hook, srcnat): per route CIDR, packets that came in on
  the tunnel and leave towards the CIDR on another interface are
  ``snat``-ed to ``sourceIP`` (or the peer's first allowedIP, as the CRD
  says), or ``masquerade``-d when there is no usable source address.
  ``oifname != <tunnel>`` keeps a packet that hairpins back into the mesh
  untouched.

Each rule is a frozen value whose ``key()`` is its nftables comment, and the
comment spells out everything the rule does (gateway, purpose, interface,
CIDR, source). Two rules with equal comments are therefore the same rule, and
the kernel's ruleset is diffed by comment alone: ``script`` deletes the
handles of rules nobody wants (including anything without one of our
comments — the table is ours) and adds the missing ones, in one atomic
``nft -f`` transaction. Existing NAT bindings live in conntrack, so adding
or removing rules never breaks established connections on its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from wirekube_common.gateway import GatewayDuty

FAMILY = "ip"
TABLE = "wirekube"
CHAINS: dict[str, str] = {
    "forward": "type filter hook forward priority filter; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}
# nftables stores at most 128 bytes of comment (NFTNL_UDATA_COMMENT_MAXLEN).
COMMENT_MAX = 127
# Kubernetes names are DNS subdomains; anything else is replaced so that a
# comment can never break out of its quotes.
_UNSAFE = re.compile(r"[^a-z0-9.\-]")
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")

Purpose = Literal["forward", "return", "snat", "masquerade"]
_CHAIN_OF: dict[str, str] = {
    "forward": "forward",
    "return": "forward",
    "snat": "postrouting",
    "masquerade": "postrouting",
}


@dataclass(frozen=True)
class NftRule:
    """One rule in our table."""

    gateway: str
    purpose: Purpose
    cidr: str  # normalised IPv4 network
    interface: str  # the WireGuard interface
    source: str | None = None  # snat only

    @property
    def chain(self) -> str:
        return _CHAIN_OF[self.purpose]

    @property
    def comment(self) -> str:
        what = {
            "forward": f"forward {self.interface} -> {self.cidr}",
            "return": f"replies {self.cidr} -> {self.interface}",
            "snat": f"snat {self.interface} -> {self.cidr} to {self.source}",
            "masquerade": f"masquerade {self.interface} -> {self.cidr}",
        }[self.purpose]
        name = _UNSAFE.sub("_", self.gateway.lower())
        text = f"wirekube gateway {name}: {what}"
        if len(text) > COMMENT_MAX:
            # Long gateway names: keep a prefix and a digest, still unique.
            digest = hashlib.sha256(self.gateway.encode()).hexdigest()[:10]
            keep = max(1, COMMENT_MAX - len(text) + len(name) - len(digest) - 1)
            text = f"wirekube gateway {name[:keep]}~{digest}: {what}"
        return text

    def key(self) -> tuple[str, str]:
        return (self.chain, self.comment)

    def render(self) -> str:
        """The rule as ``nft`` input (after ``add rule ip wirekube <chain>``)."""
        iif = f'iifname "{self.interface}"'
        oif = f'oifname "{self.interface}"'
        if self.purpose == "forward":
            body = f"{iif} ip daddr {self.cidr} counter accept"
        elif self.purpose == "return":
            body = f"{oif} ip saddr {self.cidr} ct state established,related counter accept"
        elif self.purpose == "snat":
            body = f'{iif} oifname != "{self.interface}" ip daddr {self.cidr} counter snat ip to {self.source}'
        else:
            body = f'{iif} oifname != "{self.interface}" ip daddr {self.cidr} counter masquerade'
        return f'{body} comment "{self.comment}"'


@dataclass(frozen=True)
class Observed:
    """Our table as the kernel reports it: rule key -> handle."""

    table: bool = False
    chains: frozenset[str] = frozenset()
    rules: Mapping[tuple[str, str], int] = field(default_factory=dict)


def rules_for(
    duties: Iterable[GatewayDuty], interface: str
) -> tuple[frozenset[NftRule], list[str]]:
    """The rules for this node's gateway duties, and problems worth a log line."""
    if not _IFNAME.match(interface):
        return frozenset(), [f"interface name {interface!r} is not usable in nft rules"]
    rules: set[NftRule] = set()
    problems: list[str] = []
    for duty in duties:
        source: str | None = None
        if duty.snat and duty.snat_source is not None:
            try:
                source = str(ipaddress.IPv4Address(duty.snat_source.strip()))
            except ValueError:
                problems.append(
                    f"gateway {duty.gateway}: SNAT source {duty.snat_source!r} is not an "
                    "IPv4 address; masquerading instead"
                )
        for text in duty.cidrs:
            try:
                cidr = str(ipaddress.IPv4Network(text, strict=False))
            except ValueError:
                problems.append(f"gateway {duty.gateway}: route {text!r} is not an IPv4 CIDR")
                continue
            rules.add(NftRule(duty.gateway, "forward", cidr, interface))
            rules.add(NftRule(duty.gateway, "return", cidr, interface))
            if duty.snat:
                purpose: Purpose = "snat" if source else "masquerade"
                rules.add(NftRule(duty.gateway, purpose, cidr, interface, source))
    return frozenset(rules), problems


def script(desired: Iterable[NftRule], observed: Observed) -> str | None:
    """One atomic ``nft -f`` transaction from ``observed`` to ``desired``;
    None when nothing needs to change. No rules wanted: the table goes."""
    want = {r.key(): r for r in desired}
    if not want:
        return f"delete table {FAMILY} {TABLE}\n" if observed.table else None
    lines: list[str] = []
    if not observed.table or not observed.chains >= set(CHAINS):
        # ``add`` of an existing table or chain is a no-op: safe to repeat.
        lines.append(f"add table {FAMILY} {TABLE}")
        lines += [f"add chain {FAMILY} {TABLE} {c} {{ {spec} }}" for c, spec in CHAINS.items()]
    for key, handle in sorted(observed.rules.items()):
        if key not in want:
            lines.append(f"delete rule {FAMILY} {TABLE} {key[0]} handle {handle}")
    for key in sorted(want):
        if key not in observed.rules:
            rule = want[key]
            lines.append(f"add rule {FAMILY} {TABLE} {rule.chain} {rule.render()}")
    return "\n".join(lines) + "\n" if lines else None


def parse_listing(doc: Mapping[str, object]) -> Observed:
    """``nft -j list table ip wirekube`` → ``Observed``. Rules without a
    comment get a key no desired rule has, so ``script`` deletes them."""
    items = doc.get("nftables")
    if not isinstance(items, list):
        return Observed()
    table = False
    chains: set[str] = set()
    rules: dict[tuple[str, str], int] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("table"), dict):
            table = True
        chain = item.get("chain")
        if isinstance(chain, dict) and isinstance(chain.get("name"), str):
            chains.add(chain["name"])
        rule = item.get("rule")
        if isinstance(rule, dict) and isinstance(rule.get("handle"), int):
            comment = rule.get("comment")
            name = str(rule.get("chain", ""))
            key = (name, comment if isinstance(comment, str) else f"#{rule['handle']}")
            if key in rules:  # a duplicate: keep one, delete the other
                rules[(name, f"#{rule['handle']}")] = rule["handle"]
            else:
                rules[key] = rule["handle"]
    return Observed(table=table, chains=frozenset(chains), rules=rules)


def counters(doc: Mapping[str, object]) -> dict[str, tuple[int, int]]:
    """Rule comment -> (packets, bytes), from the same listing."""
    out: dict[str, tuple[int, int]] = {}
    items = doc.get("nftables")
    for item in items if isinstance(items, list) else ():
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or not isinstance(rule.get("comment"), str):
            continue
        for expr in rule.get("expr") or ():
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                out[rule["comment"]] = (int(counter["packets"]), int(counter["bytes"]))
    return out
