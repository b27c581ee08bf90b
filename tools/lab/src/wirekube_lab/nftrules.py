"""nftables rulesets of the lab's routers and of its internet namespace (pure text).

Each lab namespace belongs to us entirely, so each gets one table,
``ip wklab``, loaded atomically with ``nft -f``. Every rule carries a comment
naming its purpose. NAT kinds (RFC 4787 terms: mapping / filtering):

``public``
    No translation, no filtering: the network's addresses are routed.
``port-restricted``
    ``masquerade`` (Linux keeps the source port when it can: endpoint-
    independent mapping) and conntrack-only return traffic (address-and-port-
    dependent filtering).
``symmetric``
    ``masquerade random,fully-random``: every new flow (new destination
    address or port) gets a fresh random port; conntrack filtering.
``full-cone`` / ``address-restricted``
    A true endpoint-independent mapping for UDP: ``udp_eim`` (LAN address .
    LAN port -> public port) makes an endpoint's first public port stick for
    every destination; that first port is its own unless another LAN
    endpoint holds it (``udp_taken``), then a random one. Plus two dynamic
    tables fed on the way out (after source NAT, at priority srcnat+10,
    where the packet already carries its mapped port): ``udp_mappings``
    (mapped port -> LAN address . LAN port) and, for address-restricted,
    ``udp_contacted`` (mapped port . remote address). On
    the way in, a *new* UDP flow to a mapped port is DNATed to its LAN owner
    if the mapping exists (full-cone) and the remote address was contacted
    from it (address-restricted). Entries expire after ``mapping_timeout``.
    TCP keeps conntrack (port-restricted) behaviour on these routers.
``tcp-only``
    A firewall: only TCP leaves (masqueraded); all UDP and ICMP is dropped.
``tls-only``
    A locked-down site: only the network's ``proxy`` hosts may open TCP
    connections out, and only to port 443 (masqueraded); everything else
    from the LAN is dropped. Nodes reach the world through the proxy (HTTP
    CONNECT), i.e. the relay over TLS on 443. The one exception is TCP to the
    lab's API server door (100.64.0.1), which a real site reaches its own way.

Nodes with ``public_ip`` behind a translating router get a static 1:1 NAT
(DNAT/SNAT of a public address on ``wan0``; all inbound allowed). The LAN
reaches that public address too (hairpin NAT, as clouds route an instance's
traffic to another instance's public IP): DNATed like inbound traffic, and
source-NATed so the replies come back through the router, from the sender's
own public address or else the router's (the NAT gateway's).

A ``load-balancer`` host (one interface on the internet) DNATs each *new*
TCP connection to its address and ports to one backend, chosen per
connection by ``numgen`` (``random``, or ``inc`` for round-robin), keeping
the port; conntrack keeps the connection on that backend. It also
source-NATs what it forwarded to its own address, so the backend's replies
come back through it (the backends see the balancer as the client, as behind
a cloud load balancer that does not preserve client addresses).

Unsolicited inbound packets to the router's WAN address are dropped in the
input hook unless ``inbound_to_router`` is set. Dropping there matters: an
inbound packet that reaches the router's own stack is answered with ICMP
port unreachable *and* leaves a confirmed conntrack entry, which makes the
next outbound mapping for that (remote, port) clash and move to another
port; that breaks hole punching, exactly as on some real routers.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address

from .addressing import APISERVER_ADDRESS, ControlLink, RouterPlan

TABLE = "wklab"


def _rule(text: str, purpose: str) -> str:
    return f'\t\t{text} comment "{purpose}"'


# Public ports the endpoint-independent kinds hand out (random within).
EIM_PORTS = "20000-59999"


def router_ruleset(router: RouterPlan) -> str:
    """The full ruleset of one router namespace."""
    wan, lan = router.wan_ifname, router.lan_ifname
    kind = router.nat.kind
    timeout = router.nat.mapping_timeout
    dynamic = kind in ("full-cone", "address-restricted")

    sets: list[str] = []
    if dynamic:
        sets.append(
            "\tmap udp_mappings {\n"
            "\t\ttype inet_service : ipv4_addr . inet_service\n"
            "\t\tflags dynamic,timeout\n"
            f"\t\ttimeout {timeout}s\n"
            "\t}"
        )
    if dynamic:
        sets.append(
            "\tmap udp_eim {\n"
            "\t\ttype ipv4_addr . inet_service : inet_service\n"
            "\t\tflags dynamic,timeout\n"
            f"\t\ttimeout {timeout}s\n"
            "\t}"
        )
        sets.append(
            "\tset udp_taken {\n"
            "\t\ttype inet_service\n"
            "\t\tflags dynamic,timeout\n"
            f"\t\ttimeout {timeout}s\n"
            "\t}"
        )
    if kind == "address-restricted":
        sets.append(
            "\tset udp_contacted {\n"
            "\t\ttype inet_service . ipv4_addr\n"
            "\t\tflags dynamic,timeout\n"
            f"\t\ttimeout {timeout}s\n"
            "\t}"
        )

    pre: list[str] = []
    for private, public in router.one_to_one:
        pre.append(
            _rule(f'iifname "{wan}" ip daddr {public} dnat ip to {private}', "1:1 NAT inbound")
        )
        pre.append(
            _rule(f'iifname "{lan}" ip daddr {public} dnat ip to {private}', "1:1 NAT hairpin")
        )
    if kind == "full-cone":
        pre.append(
            _rule(
                f'iifname "{wan}" ip daddr {router.wan_address} meta l4proto udp '
                "dnat ip to udp dport map @udp_mappings",
                "full-cone: any remote may use a mapping",
            )
        )
    elif kind == "address-restricted":
        pre.append(
            _rule(
                f'iifname "{wan}" ip daddr {router.wan_address} '
                "udp dport . ip saddr @udp_contacted "
                "dnat ip to udp dport map @udp_mappings",
                "address-restricted: remotes this mapping contacted",
            )
        )

    post: list[str] = []
    for private, public in router.one_to_one:
        post.append(
            _rule(f'oifname "{wan}" ip saddr {private} snat ip to {public}', "1:1 NAT outbound")
        )
    hairpin = f'oifname "{lan}" ct status dnat ip saddr'
    for private, public in router.one_to_one:
        post.append(_rule(f"{hairpin} {private} snat ip to {public}", "hairpin from a 1:1 node"))
    if router.one_to_one:
        rand = " fully-random" if kind == "symmetric" else ""
        post.append(
            _rule(
                f"{hairpin} {router.lan_cidr} snat ip to {router.wan_address}{rand}",
                "hairpin: back through the router",
            )
        )
    if kind == "symmetric":
        post.append(
            _rule(
                f'oifname "{wan}" masquerade random,fully-random',
                "symmetric: a new random port per flow",
            )
        )
    elif dynamic:
        # Endpoint-independent mapping for real: a LAN endpoint keeps its first
        # public port for every destination (udp_eim). The first port is its
        # own port when no other LAN endpoint holds that public port, else a
        # random one: plain masquerade would let two LAN hosts on one port
        # (two WireGuard nodes on 51820) share a public port as long as their
        # destinations differ, making the mapping destination-dependent.
        post.append(
            _rule(
                f'oifname "{wan}" meta l4proto udp '
                f"snat ip to {router.wan_address} : ip saddr . udp sport map @udp_eim",
                "endpoint-independent: the endpoint's existing mapping",
            )
        )
        post.append(
            _rule(
                f'oifname "{wan}" udp sport @udp_taken masquerade to :{EIM_PORTS} random',
                "endpoint-independent: its port is taken, a random one",
            )
        )
        post.append(_rule(f'oifname "{wan}" masquerade', "port-preserving source NAT"))
    elif kind != "public":
        post.append(_rule(f'oifname "{wan}" masquerade', "port-preserving source NAT"))

    record: list[str] = []
    if dynamic:
        stmt = (
            f'oifname "{wan}" ip saddr {router.wan_address} meta l4proto udp '
            "update @udp_mappings { udp sport : ct original ip saddr . ct original proto-src } "
            "update @udp_eim { ct original ip saddr . ct original proto-src : udp sport } "
            "update @udp_taken { udp sport }"
        )
        if kind == "address-restricted":
            stmt += " update @udp_contacted { udp sport . ip daddr }"
        record.append(_rule(stmt, "remember mappings for inbound"))

    forward = [
        _rule("ct state established,related accept", "return traffic"),
    ]
    if kind == "tcp-only":
        forward.append(
            _rule(f'iifname "{lan}" oifname "{wan}" meta l4proto tcp accept', "only TCP leaves")
        )
    elif kind == "tls-only":
        forward.append(
            _rule(
                f'iifname "{lan}" oifname "{wan}" ip daddr {APISERVER_ADDRESS} '
                "meta l4proto tcp accept",
                "the lab's API server door",
            )
        )
        if router.proxies:
            proxies = ", ".join(str(a) for a in router.proxies)
            forward.append(
                _rule(
                    f'iifname "{lan}" oifname "{wan}" ip saddr {{ {proxies} }} '
                    "tcp dport 443 accept",
                    "only the proxy leaves, only to TLS",
                )
            )
    else:
        forward.append(_rule(f'iifname "{lan}" oifname "{wan}" accept', "outbound"))
    if kind == "public":
        forward.append(_rule(f'iifname "{wan}" oifname "{lan}" accept', "no filtering"))
    elif router.one_to_one or dynamic:
        forward.append(
            _rule(f'iifname "{wan}" oifname "{lan}" ct status dnat accept', "mapped inbound")
        )
    forward.append(_rule(f'iifname "{lan}" oifname "{lan}" accept', "LAN to LAN"))

    inbound = [_rule(f'iifname "{wan}" ct state established,related accept', "replies")]
    if not router.nat.inbound_to_router:
        inbound.append(_rule(f'iifname "{wan}" drop', "unsolicited inbound stops here"))

    chains = [
        _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre),
        _chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post),
        _chain(
            "record", "type filter hook postrouting priority srcnat + 10; policy accept;", record
        ),
        _chain("forward", "type filter hook forward priority filter; policy drop;", forward),
        _chain("input", "type filter hook input priority filter; policy accept;", inbound),
    ]
    return _table(sets + [c for c in chains if c])


def balancer_ruleset(
    address: IPv4Address, backends: Sequence[IPv4Address], ports: Sequence[int], balance: str
) -> str:
    """The ruleset of a load-balancer host: a backend per new TCP connection."""
    gen = "inc" if balance == "round-robin" else "random"
    choice = ", ".join(f"{i} : {b}" for i, b in enumerate(backends))
    port_set = ", ".join(str(p) for p in ports)
    pre = [
        _rule(
            f"ip daddr {address} tcp dport {{ {port_set} }} "
            f"dnat ip to numgen {gen} mod {len(backends)} map {{ {choice} }}",
            f"load-balancer: one backend per new connection ({balance})",
        )
    ]
    post = [_rule("ct status dnat masquerade", "replies come back through the balancer")]
    return _table(
        [
            _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre),
            _chain(
                "postrouting", "type nat hook postrouting priority srcnat; policy accept;", post
            ),
        ]
    )


def internet_ruleset(control: ControlLink) -> str:
    """The internet namespace: the apiserver door to the root namespace, nothing else.

    TCP to 100.64.0.1 is DNATed to the root side of this run's control link
    and masqueraded to the internet side's address, so the root namespace
    needs no route to any lab network. Nothing else may cross the link.
    """
    cp = control.inet_ifname
    pre = [
        _rule(
            f"ip daddr {APISERVER_ADDRESS} meta l4proto tcp dnat ip to {control.root_address}",
            "apiserver lives in the root namespace",
        )
    ]
    post = [_rule(f'oifname "{cp}" masquerade', "root needs no routes to the lab")]
    forward = [
        _rule(f'oifname "{cp}" ct status dnat accept', "to the apiserver"),
        _rule(f'oifname "{cp}" drop', "nothing else reaches the root namespace"),
        _rule(f'iifname "{cp}" ct state established,related accept', "apiserver replies"),
        _rule(f'iifname "{cp}" drop', "the root namespace cannot open flows into the lab"),
    ]
    inbound = [
        _rule(f'iifname "{cp}" ct state established,related accept', "replies"),
        _rule(f'iifname "{cp}" drop', "root cannot reach the internet namespace"),
    ]
    return _table(
        [
            _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre),
            _chain(
                "postrouting", "type nat hook postrouting priority srcnat; policy accept;", post
            ),
            _chain("forward", "type filter hook forward priority filter; policy accept;", forward),
            _chain("input", "type filter hook input priority filter; policy accept;", inbound),
        ]
    )


def _chain(name: str, header: str, rules: list[str]) -> str:
    if not rules:
        return ""
    body = "\n".join(rules)
    return f"\tchain {name} {{\n\t\t{header}\n{body}\n\t}}"


def _table(blocks: list[str]) -> str:
    inner = "\n".join(blocks)
    return f"table ip {TABLE} {{\n{inner}\n}}\n"
