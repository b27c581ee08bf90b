"""Every limit and duration of the STUN server, each with the reason for its value.

The server answers unauthenticated UDP, which makes it a potential reflector:
an attacker spoofs a victim's address and we send the victim our replies.
The defences, and the numbers behind them, live here in one place.
"""

from __future__ import annotations

# Reflection: a reply may be at most this many times the size of the request
# that caused it. A minimal Binding request is 20 bytes and the reply every
# client needs (XOR-MAPPED-ADDRESS) is 32 bytes for IPv4, 44 for IPv6; with
# 3x a 20-byte request still gets XOR-MAPPED-ADDRESS + OTHER-ADDRESS +
# RESPONSE-ORIGIN over IPv4 (56 bytes), and optional attributes beyond the
# budget are left out rather than the reply dropped. Amplification is thus
# bounded at 3x, below DNS or NTP's and not worth an attacker's while.
MAX_AMPLIFICATION = 3.0

# Per source IP: a node's full discovery is ~6 requests plus retransmissions,
# re-run every few minutes; 200 nodes behind one cloud NAT (one public IP)
# re-checking at once still fit in 50/s with a burst of 100. A single spoofed
# victim receives at most 50 * 3 * ~28 bytes/s ~ 4 KiB/s from us.
PER_SOURCE_RATE = 50.0
PER_SOURCE_BURST = 100.0

# All sources together: a cap far above legitimate cluster load (thousands of
# nodes) yet low enough that a distributed flood costs us bounded CPU on one
# core (the Python request path handles well over this on the lab machine).
GLOBAL_RATE = 2000.0
GLOBAL_BURST = 4000.0

# The per-source table is bounded (least recently seen evicted first) so a
# flood from random spoofed sources cannot grow memory without limit. 64 Ki
# entries of ~200 bytes each is ~13 MiB at worst.
MAX_TRACKED_SOURCES = 65536

# An idle per-source bucket is full again after BURST / RATE = 2 s; entries
# untouched for this long carry no state worth keeping and are pruned.
SOURCE_IDLE_SECONDS = 30.0
PRUNE_INTERVAL_SECONDS = 10.0

# STUN over TCP: a Binding request is < 100 bytes; 2 KiB leaves room for
# PADDING tests and rejects a "length 65532" header trick after 20 bytes.
MAX_TCP_MESSAGE = 2048
# A TCP client that says nothing for this long is gone (RFC 5389 7.2.2
# suggests the server keep connections at least 10 s).
TCP_IDLE_SECONDS = 10.0
# Concurrent TCP connections: STUN over TCP is a fallback used by few clients;
# this bounds file descriptors and memory during a connection flood.
MAX_TCP_CONNECTIONS = 512
# Concurrent TCP connections from one source IP. A client needs one at a
# time (request, answer, close); 16 leaves room for a NAT with several nodes
# probing at once, while one address can hold at most 16/512 (3 %) of the
# slots: before this bound, one source holding idle connections left a
# second source 1 answer in 24. Beyond it a connection is closed at once,
# counted (drops reason "tcp-source-connections"), not logged.
MAX_TCP_PER_SOURCE = 16

# SOFTWARE is optional; the budget check drops it first anyway.
SOFTWARE = "wirekube-stun-probe"
# UDP receive buffer: absorbs a burst at startup without silent kernel drops.
UDP_RECV_BUFFER = 1 << 20
# Graceful stop: seconds the gRPC health server gets to finish in-flight calls.
SHUTDOWN_GRACE_SECONDS = 1.0
