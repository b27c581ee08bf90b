"""The NAT prober: runs inside a lab host and prints what STUN servers saw, as JSON.

``python -m wirekube_lab.natprobe --server A1 --alt-server A2 --local-address L``
performs the mapping and filtering tests described in
:mod:`~wirekube_lab.natbehaviour` against a responder with two addresses and
two ports (the lab's :mod:`~wirekube_lab.stunresponder`, or any RFC 5780
server), plus one STUN-over-TCP request, and prints
:class:`~wirekube_lab.natbehaviour.Observations` as JSON. Lost requests are
retransmitted; an unanswered test costs ``timeout * retries`` seconds, which
is what a filtered reply costs too, so the defaults are small (the lab loses
nothing on purpose).
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from . import ministun
from .natbehaviour import Address, Observations

Request = tuple[Address, bytes]


def transact(
    sock: socket.socket, requests: dict[str, Request], timeout: float, retries: int
) -> dict[str, tuple[ministun.Message, Address]]:
    """Send every request, retransmit the unanswered ones; answers keyed like ``requests``."""
    by_txid = {ministun.decode(data).transaction_id: name for name, (_, data) in requests.items()}
    answers: dict[str, tuple[ministun.Message, Address]] = {}
    for _ in range(retries):
        pending = {n: r for n, r in requests.items() if n not in answers}
        if not pending:
            break
        for dest, data in pending.values():
            sock.sendto(data, dest)
        deadline = time.monotonic() + timeout
        while len(answers) < len(requests):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, peer = sock.recvfrom(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            try:
                msg = ministun.decode(data)
            except ministun.StunDecodeError:
                continue
            name = by_txid.get(msg.transaction_id)
            if name is not None and msg.type == ministun.BINDING_SUCCESS:
                answers.setdefault(name, (msg, peer))
    return answers


def _udp_socket(local_address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_address, 0))
    return sock


def _tcp_mapping(server: Address, local_address: str, timeout: float) -> Address | None:
    try:
        with socket.create_connection(
            server, timeout=timeout, source_address=(local_address, 0)
        ) as s:
            s.sendall(ministun.binding_request(ministun.new_transaction_id()))
            buf = b""
            while len(buf) < ministun.HEADER.size or len(
                buf
            ) < ministun.HEADER.size + int.from_bytes(buf[2:4], "big"):
                chunk = s.recv(2048)
                if not chunk:
                    return None
                buf += chunk
            return ministun.decode(buf).mapped
    except (OSError, ministun.StunDecodeError):
        return None


def probe(
    server: str,
    alt_server: str,
    local_address: str,
    port: int = 3478,
    alt_port: int = 3479,
    timeout: float = 0.25,
    retries: int = 3,
) -> Observations:
    def req(dest: Address, change_ip: bool = False, change_port: bool = False) -> Request:
        txid = ministun.new_transaction_id()
        return dest, ministun.binding_request(txid, change_ip=change_ip, change_port=change_port)

    with _udp_socket(local_address) as sock:
        local = sock.getsockname()
        mapped = transact(
            sock,
            {
                "primary": req((server, port)),
                "alt_address": req((alt_server, port)),
                "alt_port": req((server, alt_port)),
            },
            timeout,
            retries,
        )

    def seen(name: str) -> Address | None:
        return mapped[name][0].mapped if name in mapped else None

    filter_primary: Address | None = None
    change_both = change_port = False
    if "primary" in mapped:
        with _udp_socket(local_address) as fsock:
            first = transact(fsock, {"primary": req((server, port))}, timeout, retries)
            if "primary" in first:
                filter_primary = first["primary"][0].mapped
                changed = transact(
                    fsock,
                    {
                        "both": req((server, port), change_ip=True, change_port=True),
                        "port": req((server, port), change_port=True),
                    },
                    timeout,
                    retries,
                )
                change_both = "both" in changed and changed["both"][1] == (alt_server, alt_port)
                change_port = "port" in changed and changed["port"][1] == (server, alt_port)

    return Observations(
        local=(local[0], local[1]),
        primary=seen("primary"),
        alt_address=seen("alt_address"),
        alt_port=seen("alt_port"),
        filter_primary=filter_primary,
        change_both=change_both,
        change_port=change_port,
        tcp=_tcp_mapping((server, port), local_address, timeout * retries + 0.5),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--alt-server", required=True)
    parser.add_argument("--local-address", required=True)
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--alt-port", type=int, default=3479)
    parser.add_argument("--timeout", type=float, default=0.25)
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args(argv)
    obs = probe(
        args.server,
        args.alt_server,
        args.local_address,
        args.port,
        args.alt_port,
        args.timeout,
        args.retries,
    )
    print(json.dumps(obs.to_json()))


if __name__ == "__main__":
    main()
