"""wireguard-go's UAPI (cross-platform userspace API) over its Unix socket.

The wire format is line-based ``key=value`` text: ``get=1`` returns the device
and its peers, ``set=1`` applies a change; both end with an ``errno=N`` line
and a blank line. Keys travel as hex. Formatting and parsing are pure functions
(``format_set``/``parse_get``) so they are unit-tested without a device;
``UapiClient`` only moves the text over the socket.

Note: the socket directory ``/var/run/wireguard`` is not namespaced by network
namespaces, so two userspace interfaces with one name in two namespaces share
one socket path unless each runs in its own mount namespace.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from wirekube_common.wireguard.types import (
    DeviceConfig,
    DeviceState,
    IPNetwork,
    PeerState,
    format_endpoint,
    parse_endpoint,
)

DEFAULT_RUN_DIR = "/var/run/wireguard"
# A `get` on a device with thousands of peers is a few hundred KiB; the
# timeout only guards against a wedged daemon, not a slow one.
SOCKET_TIMEOUT_S = 5.0


class UapiError(OSError):
    """The daemon refused a request (errno != 0) or the socket misbehaved."""


def format_set(config: DeviceConfig) -> str:
    lines = ["set=1"]
    if config.private_key is not None:
        lines.append(f"private_key={config.private_key.hex()}")
    if config.listen_port is not None:
        lines.append(f"listen_port={config.listen_port}")
    if config.fwmark is not None:
        lines.append(f"fwmark={config.fwmark}")
    if config.replace_peers:
        lines.append("replace_peers=true")
    for peer in config.peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        if peer.remove:
            lines.append("remove=true")
            continue
        if peer.update_only:
            lines.append("update_only=true")
        if peer.endpoint is not None:
            lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
        if peer.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        if peer.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines.extend(f"allowed_ip={net}" for net in peer.allowed_ips)
    return "\n".join(lines) + "\n\n"


def parse_get(text: str) -> DeviceState:
    """Parse a ``get=1`` answer (without requiring the trailing errno line)."""
    device: dict[str, object] = {"private_key": None, "listen_port": 0, "fwmark": 0}
    peers: dict[bytes, PeerState] = {}
    current: dict[str, object] | None = None

    def flush() -> None:
        if current is not None:
            allowed: set[IPNetwork] = current.pop("allowed", set())  # type: ignore[assignment]
            sec = int(current.pop("hs_sec", 0))  # type: ignore[call-overload]
            nsec = int(current.pop("hs_nsec", 0))  # type: ignore[call-overload]
            state = PeerState(
                allowed_ips=frozenset(allowed),
                last_handshake=sec + nsec / 1e9 if sec else 0.0,
                **current,  # type: ignore[arg-type]
            )
            peers[state.public_key] = state

    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(f"malformed UAPI line {line!r}")
        if key == "errno":
            if value != "0":
                raise UapiError(int(value), f"wireguard-go refused get: errno={value}")
            continue
        if key == "public_key":
            flush()
            current = {"public_key": bytes.fromhex(value), "allowed": set()}
            continue
        if current is None:
            if key == "private_key":
                device["private_key"] = bytes.fromhex(value)
            elif key in ("listen_port", "fwmark"):
                device[key] = int(value)
            continue
        if key == "endpoint":
            current["endpoint"] = parse_endpoint(value)
        elif key == "allowed_ip":
            current["allowed"].add(ipaddress.ip_network(value, strict=False))  # type: ignore[attr-defined]
        elif key == "persistent_keepalive_interval":
            current["persistent_keepalive"] = int(value)
        elif key == "last_handshake_time_sec":
            current["hs_sec"] = int(value)
        elif key == "last_handshake_time_nsec":
            current["hs_nsec"] = int(value)
        elif key in ("rx_bytes", "tx_bytes"):
            current[key] = int(value)
    flush()
    return DeviceState(
        private_key=device["private_key"],  # type: ignore[arg-type]
        listen_port=int(device["listen_port"]),  # type: ignore[call-overload]
        fwmark=int(device["fwmark"]),  # type: ignore[call-overload]
        peers=peers,
    )


class UapiClient:
    """One request per connection, as wireguard-go expects."""

    def __init__(self, interface: str, run_dir: str = DEFAULT_RUN_DIR) -> None:
        self.interface = interface
        self.path = os.path.join(run_dir, f"{interface}.sock")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def get(self) -> DeviceState:
        return parse_get(self._request("get=1\n\n"))

    def set(self, config: DeviceConfig) -> None:
        answer = self._request(format_set(config))
        for line in answer.splitlines():
            if line.startswith("errno=") and line != "errno=0":
                raise UapiError(int(line[6:]), f"wireguard-go refused set: {line}")

    def _request(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(SOCKET_TIMEOUT_S)
            try:
                sock.connect(self.path)
                sock.sendall(text.encode("ascii"))
                chunks: list[bytes] = []
                tail = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    # The answer always ends with "errno=N\n\n"; the tail may
                    # straddle two reads.
                    tail = (tail + chunk)[-32:]
                    if tail.endswith(b"\n\n") and b"errno=" in tail:
                        break
            except OSError as exc:
                raise UapiError(exc.errno, f"UAPI {self.path}: {exc}") from exc
        return b"".join(chunks).decode("ascii", errors="replace")
