"""Durations and limits of the agent's relay client, each with its reason."""

from __future__ import annotations

#: TCP connect to a relay replica. Relays are reached over the internet at
#: worst; 3 s covers a slow path without stalling failover for long.
CONNECT_TIMEOUT = 3.0

#: HELLO -> OK must complete within this (one RTT plus one X25519 each side).
HANDSHAKE_TIMEOUT = 5.0

#: Bounds of successive registration attempts after a connect, each on a new
#: connection, retried at once. Behind a load balancer a replica that hangs
#: silently (stopped, no RST) still completes TCP connects in its kernel, so a
#: reconnect can land on it again; 1 s is many round trips on any sane path, so
#: the first bound only loses a hung replica's second, and the next connection
#: is spread elsewhere. The bounds grow to HANDSHAKE_TIMEOUT so a slow path
#: (a long RTT, a proxy) still registers.
REGISTER_BOUNDS = (1.0, 2.0, HANDSHAKE_TIMEOUT)

#: An HTTP proxy's answer to CONNECT must arrive within this: it opens a TCP
#: connection to the relay first, so a slow path is allowed, a hang is not.
PROXY_TIMEOUT = 5.0

#: TLS handshake with the relay (one round trip with TLS 1.3, two with 1.2,
#: through a proxy perhaps): generous, but a relay that stalls it is retried.
TLS_HANDSHAKE_TIMEOUT = 5.0

#: The client PINGs each replica this often. A flow must move to a live
#: replica within 5 s of a silent failure: PING_INTERVAL + DEAD_AFTER + the
#: watchdog tick stays below that.
PING_INTERVAL = 1.0

#: A replica from which nothing (not even a PONG) arrived for this long is
#: declared dead and its flows move to another replica.
DEAD_AFTER = 3.0

#: A PING sent this long ago with nothing at all received since declares the
#: link dead (sooner than DEAD_AFTER's silence, so failover stays well inside
#: 5 s). Above the relay's 1.5 s stall release: a relay that holds our reads
#: because a receiver is slow still reads (and answers) within that.
PONG_TIMEOUT = 2.0

#: The watchdog (pings, dead detection, deferred socket closes) runs this often.
WATCHDOG_TICK = 0.25

#: Re-resolve a relay DNS name this often (the mesh spec says 30 s: new
#: replicas are used after the next resolve).
RESOLVE_INTERVAL = 30.0

#: DNS query timeout (per resolve attempt).
RESOLVE_TIMEOUT = 3.0

#: Reconnect backoff to a replica: exponential from 0.2 s, capped at 2 s plus
#: up to BACKOFF_JITTER. Relayed pairs must be back within 5 s of a replaced
#: relay pod turning ready (issue 12), and that budget also holds the
#: reconcile pass that moves them back (up to 1 s); with a 5 s cap the lab
#: measured 8.7 s when the attempt just before the replica came back had
#: failed. A node retrying a dead relay every ~2 s costs one SYN each; the
#: jitter keeps a fleet that lost its relay at once from retrying in step.
BACKOFF_MIN = 0.2
BACKOFF_MAX = 2.0
BACKOFF_JITTER = 0.3

#: After a key rotation the link re-registers under the new key at once, and
#: while the relay refuses it (its allow-list follows the WireKubePeers through
#: its own watch, which can trail ours by a few tens of ms) it retries this
#: often instead of backing off: every retry here is a relayed pair's outage.
REKEY_RETRY = 0.02
#: ...for at most this long; then the ordinary backoff takes over.
REKEY_RETRY_FOR = 3.0
#: The connection a rotation replaced is half-closed and read until the relay
#: closes its end, a round trip later; a relay that does not is cut off after
#: this long.
RETIRE_AFTER = 2.0

#: Frames for one replica are gathered into one buffer of this size and written
#: with one sendall; larger batches amortise the per-syscall cost.
UPLINK_BATCH = 256 * 1024

#: Receive buffer for frames coming from a replica.
DOWNLINK_BUFFER = 256 * 1024

#: At most this many datagrams are drained from one peer socket per poll round
#: so a flooding peer cannot starve the others.
DRAIN_BUDGET = 128

#: Largest UDP datagram accepted from WireGuard. WireGuard datagrams are the
#: interface MTU + 32 bytes (1452 at the default 1420 MTU, ~9 KiB with jumbo
#: frames); 16 KiB leaves room while letting ~3 such packets share one batch
#: frame even in the worst case. Larger datagrams are dropped and counted.
MAX_DATAGRAM = 16 * 1024

#: Sockets removed from the relayed set are closed this much later, so the
#: downlink thread never writes through a reused file descriptor.
SOCKET_CLOSE_DELAY = 1.0

#: Datagrams per recvmmsg call on the uplink. 64 x 1452-byte datagrams is
#: ~93 KB per system call pair; the gathering sendmsg that follows has at most
#: three iovecs per datagram, well under IOV_MAX = 1024.
MMSG_VLEN = 64

#: The recvmmsg slot size to start with: a full-size WireGuard datagram at the
#: default 1420 MTU. The bridge moves it to whatever size its traffic mostly has.
MMSG_SLOT = 1452

#: Handover (bridge.py): how often a bridge holding adopted sockets checks
#: for its first live link, and a retiring one for its last; each datagram
#: waits at most this long in its socket meanwhile.
HANDOVER_POLL = 0.005
#: A bridge given adopted sockets reads them after this long even if none
#: of its links is live yet (the old bridge's links may be dead too).
HANDOVER_HOLD = 5.0
