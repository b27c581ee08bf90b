"""Per-source and per-connection bounds of the relay, each with the reason for its value.

Durations live in timers.py; buffer sizes of the hot path stay there too (they
are tuned for speed, not for abuse). Everything here bounds what one client,
or one source address, can make the relay spend: slots, memory, CPU, log lines.
docs/relay-protocol.md ("Behaviour under hostile or slow clients") states the
same numbers to clients.

``Limits`` gathers the configurable ones (flags in __main__); the per-source
table that enforces the per-address bounds is limits/sources.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wirekube_common.relayproto import frames as f
from wirekube_relay import timers

# --- the whole relay ---------------------------------------------------------

#: Connections that have not registered yet, at most. New ones beyond are
#: closed at once with CLOSE(overloaded). Each costs ~2 KiB (HANDSHAKE_BUFFER)
#: plus a socket: 4096 of them are ~10 MiB.
MAX_PENDING = 4096

#: All connections, at most (file descriptors; the relay raises its soft
#: RLIMIT_NOFILE to the hard limit at start).
MAX_CONNECTIONS = 65536

#: Memory one registration costs: its receive buffer (RECV_BUFFER + one
#: maximal frame) plus ~64 KiB of kernel socket buffers and Python objects.
#: Measured: 6,000 registrations took 1.96 GB, ~320 KiB each.
REGISTRATION_COST = timers.RECV_BUFFER + f.HEADER_LEN + f.MAX_PAYLOAD + 64 * 1024

#: Share of the memory budget (the container's limit, else the host's RAM)
#: that registrations may take by default; the rest is for queues in flight,
#: pending connections and the interpreter.
REGISTRATION_MEMORY_SHARE = 0.5

#: Never fewer registrations than this by default, even on a tiny budget: a
#: relay that cannot take a small cluster is useless.
MIN_REGISTRATIONS = 64

# --- per source address ------------------------------------------------------

#: Unregistered connections from one address, at most. An honest node has one
#: per replica and registers within a round trip; 64 still lets a NAT with
#: many nodes behind one address reconnect all of them after a relay restart
#: (the rest retry with backoff), while one address can take at most 64 of
#: the relay's 4096 pending slots (1.6 %): it can never lock others out.
MAX_PENDING_PER_SOURCE = 64

#: All connections from one address, at most: one per node behind that
#: address (a large cloud NAT) with plenty of room, while one address cannot
#: take more than 1/64 of the relay's descriptors.
MAX_CONNECTIONS_PER_SOURCE = 1024

#: Registration attempts (HELLOs) per source address: rate per second and
#: burst. Each costs the relay an X25519 key generation and exchange (~0.2
#: ms). A burst of 256 admits a NAT full of restarting nodes at once; beyond,
#: 20/s bounds that cost at ~0.4 % of a core per address. Refused with
#: CLOSE(rate-limited) before any key is generated.
HELLO_RATE_PER_SOURCE = 20.0
HELLO_BURST_PER_SOURCE = 256.0

# --- per connection ----------------------------------------------------------

#: PINGs a client may send: per second and burst. Agents ping once a second;
#: ten times that is generous. Each PING costs a decode and a PONG, ~3
#: microseconds; unbounded, one client's flood of them took the honest round
#: trip p99 from 1 ms to 1.5 s. Over budget, the relay stops reading that
#: connection for a while (see RATE_LIMIT_STRIKES).
PING_RATE = 10.0
PING_BURST = 50.0

#: Lookups of keys that are not registered here, per second and burst. The
#: forwarder looks a destination up once per read however many frames go to
#: it, so an honest agent still sending at line rate to a peer that left costs
#: one lookup per read (~1,000 a second at most); what costs the relay is a
#: different unknown key in every frame (~2.5 microseconds each, a PEER_GONE
#: decision each): a flood of those took the honest round trip p99 from 1.3
#: to 81 ms. Over budget, the relay stops reading that connection for a while
#: (its own traffic waits; nobody else's does).
NO_PEER_RATE = 2000.0
NO_PEER_BURST = 8000.0

#: A connection over a budget (PING, unknown keys) is not read for a while
#: (timers.THROTTLE_MIN at least): its flood costs only its own throughput,
#: and closing it at once would only trade the flood for a reconnect loop
#: (a registration costs the relay far more than a PING). The
#: RATE_LIMIT_STRIKES-th time in a row it is closed with CLOSE(rate-limited).
RATE_LIMIT_STRIKES = 5

#: PEER_GONE notices per connection, per second and burst (over all keys; the
#: per-key interval is timers.PEER_GONE_INTERVAL). Notices beyond are not
#: sent (counted): a client can never make the relay write more than this.
PEER_GONE_RATE = 20.0
PEER_GONE_BURST = 64.0

#: Control replies (PONG, PEER_GONE) are dropped and counted while the
#: connection already has more than this queued for writing: a client that
#: does not read can never make the relay buffer them without bound. Data
#: frames to it are bounded by timers.DROP_LIMIT.
CONTROL_QUEUE_LIMIT = timers.WRITE_HIGH_WATER

#: Connections past their registration deadline closed per loop turn (the
#: rest on the next turns, after the reads that were ready): each close costs
#: ~50 microseconds, so a chunk stalls the loop for a few milliseconds at most.
EXPIRE_CHUNK = 64

#: Pause between two such chunks: the loop goes idle in between, so the
#: honest clients (and on a small node, whatever shares its cores) run
#: too; 4,096 expiring together are closed within 64 chunks, ~0.4 s.
EXPIRE_PACE = 0.003

#: Kernel accept queue of the relay's listening sockets: a burst of this many
#: connects (every node after a relay restart) waits there, not refused.
LISTEN_BACKLOG = 4096

#: Connections asyncio accepts per loop turn (it accepts up to its listen
#: backlog in one callback): 4,000 connects arriving together, accepted in one
#: go, stalled the loop ~300 ms; 64 at a time cost a few ms per turn, with
#: the honest pairs' reads served in between. See ``listen``.
ACCEPT_BATCH = 64

# --- logs --------------------------------------------------------------------

#: Refusal log lines per reason per interval (timers.REFUSAL_LOG_INTERVAL);
#: past that one summary line per reason and interval says how many were not
#: logged. A flood of thousands of refusals a second makes a few lines.
REFUSAL_LOG_LINES = 5


def memory_budget() -> int:
    """Bytes this process may use: the cgroup's memory limit, else the host's RAM."""
    for path, unlimited in (
        ("/sys/fs/cgroup/memory.max", "max"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", ""),
    ):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text and text != unlimited and int(text) < (1 << 60):
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_max_registrations(budget: int) -> int:
    """Registrations a relay with ``budget`` bytes of memory can hold."""
    return max(MIN_REGISTRATIONS, int(budget * REGISTRATION_MEMORY_SHARE) // REGISTRATION_COST)


@dataclass
class Limits:
    """The configurable bounds (flags), defaults from here and from timers.py."""

    max_payload: int = timers.DEFAULT_MAX_PAYLOAD
    keepalive: float = timers.KEEPALIVE_INTERVAL
    dead_timeout: float = timers.DEAD_TIMEOUT
    registration_deadline: float = timers.REGISTRATION_DEADLINE
    max_pending: int = MAX_PENDING
    max_connections: int = MAX_CONNECTIONS
    stall_limit: float = timers.STALL_LIMIT
    max_registrations: int = 1 << 30
    max_pending_per_source: int = MAX_PENDING_PER_SOURCE
    max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE
