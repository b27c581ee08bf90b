"""Every duration and buffer size the relay uses, each with the reason for its value.

Bounds on what one client or address may use are in limits.py."""

from __future__ import annotations

#: A client that has not finished HELLO -> CHALLENGE -> PROOF in this time is
#: closed. A legitimate client needs one round trip and one X25519 operation;
#: ten seconds covers a slow, lossy link while bounding how long an idle or
#: hostile connection can hold a slot.
REGISTRATION_DEADLINE = 10.0

#: A registered connection from which nothing was received for this long is
#: sent a PING. Announced to clients in OK so both sides use the same cadence;
#: well under common NAT/firewall TCP idle timeouts (>= 60 s).
KEEPALIVE_INTERVAL = 10.0

#: A registered connection silent for this long is dead and closed (three
#: keepalive intervals: one lost ping or a short stall is not fatal).
DEAD_TIMEOUT = 30.0

#: How often the housekeeping sweep runs (deadlines, keepalives, stalls). One
#: second keeps deadline enforcement accurate to ~1 s at negligible cost.
SWEEP_INTERVAL = 1.0

#: A receiver whose transport stays above its high-water mark this long is
#: "stalled": its senders are released from backpressure and frames to it are
#: dropped instead, so one slow or hostile receiver cannot stall a sender's
#: traffic to everyone else. A timer per pause (not the 1 s sweep) marks it,
#: so senders are released after this plus the loop's latency; 1.5 s keeps
#: the spec's promise (released within 2 s) with room for a loaded host, and
#: is still far above a healthy receiver's drain time (1 MiB in < 10 ms).
STALL_LIMIT = 1.5

#: A receiver stalled (reading nothing) this long is closed with
#: CLOSE(too-slow): frames to it were being dropped anyway, and its queue
#: (up to DROP_LIMIT) is memory held for nobody. Below DEAD_TIMEOUT, so a
#: client that sends but never reads cannot keep a full queue alive.
STALLED_CLOSE = 20.0

#: Refusal log lines are summarised per this interval (refusals.py).
REFUSAL_LOG_INTERVAL = 10.0

#: A connection over its PING or unknown-key budget is not read for at least
#: this long: long enough that a flooder gets a few reads a second at most,
#: short enough that an honest client that overshot once (a burst of frames
#: to a peer that just left) hardly notices.
THROTTLE_MIN = 1.0

#: Rate-limit strikes older than this are forgotten: a client is closed only
#: for a flood that goes on, not for occasional bursts over minutes.
STRIKES_FORGOTTEN = 10.0

#: At most one PEER_GONE notice per destination key per connection per this
#: interval: enough for a client to fail over, never a reflection amplifier.
PEER_GONE_INTERVAL = 1.0

#: Grace period for in-flight admin RPCs and queued writes at shutdown.
SHUTDOWN_GRACE = 2.0

# --- sizes ---------------------------------------------------------------

#: Receive buffer per connection. Large reads amortise the per-read Python
#: overhead over ~180 frames of 1400 B; the buffer is preallocated once.
RECV_BUFFER = 256 * 1024

#: Receive buffer before registration: handshake frames are at most 515
#: bytes, so 2 KiB holds a few; 4096 pending connections cost 8 MiB, not 1 GiB.
HANDSHAKE_BUFFER = 2048

#: Transport write buffer marks. The asyncio default (64 KiB) pauses senders
#: far too often at line rate; 1 MiB is ~700 frames of 1400 B in flight.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024

#: Above this many queued bytes for a receiver, frames to it are dropped (and
#: counted) rather than queued: memory per connection stays bounded.
DROP_LIMIT = 8 * 1024 * 1024

#: A run of consecutive frames to one receiver at least this large is written
#: straight from the receive buffer; smaller runs are copied into the
#: receiver's staging buffer and written once per read (fewer syscalls when
#: senders interleave destinations).
DIRECT_WRITE_MIN = 32 * 1024
# A connection's staging buffer keeps up to this much capacity between writes.
STAGE_KEEP = 1024 * 1024

#: Default largest frame payload: the protocol maximum, so that batch frames
#: (up to ~64 KiB of packets to one key) fit. Hostile sizes are bounded by the
#: 16-bit length field and, before registration, by MAX_HANDSHAKE_PAYLOAD.
DEFAULT_MAX_PAYLOAD = 0xFFFF

# Per-source, per-connection and relay-wide bounds (pending connections,
# registrations, rates of control frames): limits.py.
