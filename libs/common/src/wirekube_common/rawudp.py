"""Send and receive UDP *as* a port that another socket owns (WireGuard's).

Problem: the endpoint a node publishes must be the public NAT mapping of its
WireGuard listen port, and path probes should travel the same mapping. But
WireGuard (kernel or wireguard-go) owns that UDP port; a second ordinary UDP
socket cannot bind it, and a different port gets a different mapping.

Technique: a raw ``socket(AF_INET, SOCK_RAW, IPPROTO_UDP)``.

* **Sending**: we build the UDP header ourselves with source port = the
  WireGuard port (and, for IPv4, the IP header with ``IP_HDRINCL`` so the
  source address that goes into the UDP checksum is exactly the one on the
  wire; it comes from a route lookup: ``connect()`` on a throwaway UDP
  socket, which sends nothing). The NAT sees the same 5-tuple source as
  WireGuard's own packets, so it uses -- or creates -- the same mapping.
  For IPv6 the kernel fills the checksum (``IPV6_CHECKSUM`` at offset 6).
* **Receiving**: the kernel hands a *copy* of every inbound UDP datagram to
  every raw UDP socket before UDP demultiplexing, so replies addressed to
  the WireGuard port reach both WireGuard's socket and ours. WireGuard
  drops what it cannot parse (a STUN reply's first little-endian word is
  not a WireGuard message type 1-4; wireguard-go logs it at verbose level as
  an unknown message type and the kernel module counts it as an invalid
  packet), so the tunnel is not disturbed -- the lab test shows pings
  flowing through the tunnel across probes.
* **Filtering**: a classic BPF program (``SO_ATTACH_FILTER``) keeps only
  datagrams whose destination port is ours (and drops non-first IPv4
  fragments, which carry no UDP header), so the kernel does not copy all the
  host's UDP traffic into Python. Datagrams that arrived between ``socket()``
  and the attach are drained, and every datagram is re-checked in Python.
* ``SO_MARK`` (optional) marks probes like WireGuard's own packets so policy
  routing sends them out of the underlay, never into the tunnel.

Needs CAP_NET_RAW. The packet building/parsing and the BPF program are pure
functions and unit-tested; ``RawUdpPort`` is the thin socket owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wirekube_common.stun.endpoint import Endpoint, IPAddress

IPPROTO_UDP = 17
SO_ATTACH_FILTER = 26
SO_MARK = 36
IPV6_CHECKSUM = 7
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
# Offset of the UDP checksum inside the UDP header (for IPV6_CHECKSUM).
UDP_CHECKSUM_OFFSET = 6
DEFAULT_TTL = 64
RECV_BUFFER = 65535

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


# --------------------------------------------------------------------------- pure helpers


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_checksum_v4(src: bytes, dst: bytes, udp: bytes) -> int:
    """UDP checksum over the IPv4 pseudo-header; 0 is sent as 0xFFFF (RFC 768)."""
    pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, len(udp))
    csum = internet_checksum(pseudo + udp)
    return csum or 0xFFFF


def build_udp_ipv4(
    src: Endpoint, dst: Endpoint, payload: bytes, *, ident: int = 0, ttl: int = DEFAULT_TTL
) -> bytes:
    """A complete IPv4 + UDP packet (header checksum filled; the kernel re-fills it too)."""
    if src.family != 4 or dst.family != 4:
        raise ValueError("IPv4 endpoints required")
    udp_len = 8 + len(payload)
    src_b, dst_b = src.ip.packed, dst.ip.packed
    udp = _UDP.pack(src.port, dst.port, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", udp_checksum_v4(src_b, dst_b, udp)) + udp[8:]
    total = 20 + udp_len
    # Version 4, IHL 5; DF set: probes are small and must not be fragmented.
    header = _IPV4.pack(0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, IPPROTO_UDP, 0, src_b, dst_b)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + udp


def build_udp_header(sport: int, dport: int, payload: bytes) -> bytes:
    """UDP header (checksum 0) + payload, for IPv6 where the kernel fills the checksum."""
    return _UDP.pack(sport, dport, 8 + len(payload), 0) + payload


@dataclass(frozen=True)
class Datagram:
    """A received UDP datagram: payload and both transport addresses."""

    payload: bytes
    src: Endpoint
    dst: Endpoint


def parse_udp_ipv4(packet: bytes) -> Datagram | None:
    """Parse an IPv4 packet as delivered to a raw IPv4 socket; None if not usable UDP."""
    if len(packet) < 28 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + 8 or packet[9] != IPPROTO_UDP:
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:
        return None  # non-first fragment: no UDP header here
    sport, dport, ulen, _ = _UDP.unpack_from(packet, ihl)
    if ulen < 8 or ihl + ulen > len(packet):
        return None
    src_ip = ipaddress.IPv4Address(packet[12:16])
    dst_ip = ipaddress.IPv4Address(packet[16:20])
    return Datagram(packet[ihl + 8 : ihl + ulen], Endpoint(src_ip, sport), Endpoint(dst_ip, dport))


def parse_udp_ipv6(segment: bytes, src_ip: IPAddress, dst_ip: IPAddress) -> Datagram | None:
    """Parse what a raw IPv6 socket delivers (UDP header onwards)."""
    if len(segment) < 8:
        return None
    sport, dport, ulen, _ = _UDP.unpack_from(segment)
    if ulen < 8 or ulen > len(segment):
        return None
    return Datagram(segment[8:ulen], Endpoint(src_ip, sport), Endpoint(dst_ip, dport))


# Classic BPF opcodes (linux/filter.h).
_BPF_LD_H_ABS = 0x28
_BPF_LD_W_ABS = 0x20
_BPF_LD_H_IND = 0x48
_BPF_LD_W_IND = 0x40
_BPF_LDX_B_MSH = 0xB1
_BPF_JMP_JEQ_K = 0x15
_BPF_JMP_JSET_K = 0x45
_BPF_RET_K = 0x06
_ACCEPT = 0x0004_0000  # "up to 256 KiB of the packet": all of it


def bpf_dst_port_program(
    port: int, *, ipv6: bool, payload_words: Sequence[tuple[int, int]] = ()
) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) instructions accepting UDP datagrams to ``port`` only.

    IPv4 raw sockets see the packet from the IP header: skip non-first
    fragments, find the UDP header with the IHL, compare the destination
    port. IPv6 raw sockets see it from the UDP header.

    ``payload_words`` narrows it further to datagrams whose UDP payload holds
    one of the given 32-bit big-endian words at the given offset (e.g. the
    STUN magic cookie at 4). Without it every WireGuard packet to the port
    would be copied into Python; with it the kernel drops them, which keeps a
    busy tunnel from costing the agent CPU.
    """
    # Jump targets are symbolic ("accept"/"drop") until the program is laid out.
    Insn = tuple[int, str | None, str | None, int]
    prog: list[Insn] = []
    if ipv6:
        prog.append((_BPF_LD_H_ABS, None, None, 2))  # A = udp.dport
    else:
        prog += [
            (_BPF_LD_H_ABS, None, None, 6),  # A = flags + fragment offset
            (_BPF_JMP_JSET_K, "drop", None, 0x1FFF),  # non-first fragment
            (_BPF_LDX_B_MSH, None, None, 0),  # X = 4 * (ip[0] & 0xf)
            (_BPF_LD_H_IND, None, None, 2),  # A = udp.dport
        ]
    if not payload_words:
        prog.append((_BPF_JMP_JEQ_K, "accept", "drop", port))
    else:
        prog.append((_BPF_JMP_JEQ_K, None, "drop", port))
        load = _BPF_LD_W_ABS if ipv6 else _BPF_LD_W_IND
        for offset, word in payload_words:
            prog += [(load, None, None, 8 + offset), (_BPF_JMP_JEQ_K, "accept", None, word)]
    prog += [(_BPF_RET_K, None, None, 0), (_BPF_RET_K, None, None, _ACCEPT)]
    where = {"drop": len(prog) - 2, "accept": len(prog) - 1}
    return [
        (code, where[jt] - pc - 1 if jt else 0, where[jf] - pc - 1 if jf else 0, k)
        for pc, (code, jt, jf, k) in enumerate(prog)
    ]


def _attach_bpf(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    insns = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(insns)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def route_source(dst: IPAddress, fwmark: int | None = None) -> IPAddress:
    """The source address the kernel would use towards ``dst`` (sends nothing)."""
    family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if fwmark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
        s.connect((str(dst), 9))
        return ipaddress.ip_address(s.getsockname()[0])


# --------------------------------------------------------------------------- the socket owner


class RawUdpPort:
    """Raw-socket view of one UDP port of this host (IPv4 or IPv6)."""

    def __init__(
        self,
        port: int,
        *,
        family: int = socket.AF_INET,
        fwmark: int | None = None,
        payload_words: Sequence[tuple[int, int]] = (),
    ):
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"bad port {port}")
        self.port = port
        self.family = family
        self.fwmark = fwmark
        self.payload_words = tuple(payload_words)
        self.sent = 0
        self.received = 0
        self._ident = 0
        self._sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_UDP)
        try:
            self._setup()
        except OSError:
            self._sock.close()
            raise

    def _setup(self) -> None:
        s = self._sock
        ipv6 = self.family == socket.AF_INET6
        if ipv6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, UDP_CHECKSUM_OFFSET)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        if self.fwmark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, self.fwmark)
        _attach_bpf(s, bpf_dst_port_program(self.port, ipv6=ipv6, payload_words=self.payload_words))
        s.setblocking(False)
        # Drop whatever was queued before the filter existed.
        with contextlib.suppress(BlockingIOError):
            while True:
                s.recv(RECV_BUFFER)

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, payload: bytes, dst: Endpoint, *, src_ip: IPAddress | None = None) -> None:
        """Send ``payload`` to ``dst`` from (route source or ``src_ip``, our port)."""
        if dst.family != (6 if self.family == socket.AF_INET6 else 4):
            raise ValueError(f"{dst} does not match the socket family")
        if self.family == socket.AF_INET6:
            self._sock.sendto(build_udp_header(self.port, dst.port, payload), (str(dst.ip), 0))
        else:
            src = Endpoint(src_ip or route_source(dst.ip, self.fwmark), self.port)
            self._ident = (self._ident + 1) & 0xFFFF
            packet = build_udp_ipv4(src, dst, payload, ident=self._ident)
            self._sock.sendto(packet, (str(dst.ip), 0))
        self.sent += 1

    def recv(self) -> Datagram | None:
        """Next datagram addressed to our port, or None when nothing is queued."""
        while True:
            try:
                if self.family == socket.AF_INET6:
                    data, anc, _flags, addr = self._sock.recvmsg(RECV_BUFFER, socket.CMSG_SPACE(20))
                    dst_ip: IPAddress = ipaddress.IPv6Address(0)
                    for level, kind, value in anc:
                        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
                            dst_ip = ipaddress.IPv6Address(value[:16])
                    src_ip = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
                    dgram = parse_udp_ipv6(data, src_ip, dst_ip)
                else:
                    dgram = parse_udp_ipv4(self._sock.recv(RECV_BUFFER))
            except BlockingIOError:
                return None
            if dgram is not None and dgram.dst.port == self.port:
                self.received += 1
                return dgram

    def close(self) -> None:
        self._sock.close()


class AsyncRawUdpPort:
    """Runs a ``RawUdpPort`` on the event loop: each datagram goes to ``on_datagram``."""

    def __init__(self, raw: RawUdpPort, on_datagram: Callable[[Datagram], None]) -> None:
        self.raw = raw
        self._on_datagram = on_datagram
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(raw.fileno(), self._readable)

    def _readable(self) -> None:
        while (dgram := self.raw.recv()) is not None:
            self._on_datagram(dgram)

    def send(self, payload: bytes, dst: Endpoint) -> None:
        self.raw.send(payload, dst)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.raw.fileno())
        self.raw.close()
