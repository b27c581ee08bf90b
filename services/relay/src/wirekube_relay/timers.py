"""Every duration and buffer size the relay uses, each with the reason for its value.

Bounds on what one client or address may use are in limits/bounds.py."""

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

#: Refusal log lines are summarised per this interval (limits/refusals.py).
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
# registrations, rates of control frames): limits/bounds.py.

# --- replica mesh (mesh/pool.py) -------------------------------------------------

#: A registered connection from which nothing arrived for this long is
#: "quiet": if its key registered on another replica after it, frames for the
#: key follow that newer registration. Agents ping every second, so a live
#: agent is never quiet; two seconds is two sweeps without a single read.
QUIET_AFTER = 2.0

#: Re-resolve the headless Service name this often (the mesh spec's 30 s:
#: a new replica is dialled by the others within this, and it dials them at
#: its own start at once).
MESH_RESOLVE_INTERVAL = 30.0

#: Until the pool name names another replica (a fresh pool: replicas appear in
#: the headless Service only once ready), it is asked again this often.
MESH_RESOLVE_RETRY = 2.0

#: One DNS lookup of the pool name, at most (the cluster DNS answers in ms).
MESH_RESOLVE_TIMEOUT = 5.0

#: Discovery and link housekeeping (dials, pings, deadlines) run this often.
MESH_TICK = 1.0

#: TCP connect to another replica (same cluster network: fast or never).
MESH_CONNECT_TIMEOUT = 3.0

#: Each link is pinged once a second; a link silent for three seconds is dead
#: and the keys announced over it are forgotten, so frames stop going to a
#: replica that vanished without a FIN well within the 5 s failover budget.
MESH_PING_INTERVAL = 1.0
MESH_DEAD_AFTER = 3.0

#: Redial backoff per address: from 0.5 s (a replica restarting is back in
#: about a second) doubling to 5 s (a dead address costs one SYN per 5 s).
MESH_BACKOFF_MIN = 0.5
MESH_BACKOFF_MAX = 5.0

#: Other replicas of one pool, at most (presence memory is bounded by this
#: times MAX_CONNECTIONS keys).
MESH_MAX_REPLICAS = 64

#: Replica handshakes in progress at once, at most: a replica dials each
#: other replica once, so anything beyond is not a pool member's doing.
MESH_MAX_PENDING = 64

#: A replica link's reader moves a partial frame to the front of its buffer
#: once less than this is left to read into (reads stay large).
MESH_MIN_READ = 64 * 1024

#: A replica must finish its join (one round trip, two HMACs) within this;
#: replicas share a cluster network, so anything slower is not one of them.
MESH_HANDSHAKE_DEADLINE = 3.0

#: Replica handshakes in progress from one address, at most: a replica dials
#: each other replica once, so more from one address is not a replica.
MESH_MAX_PENDING_PER_SOURCE = 4

#: A replica link whose queue grows past this is closed (and redialled)
#: rather than dropping a control frame: presence must not be lost. Data to
#: it is dropped above DROP_LIMIT first, so only a link that is not draining
#: at all gets here.
MESH_CONTROL_LIMIT = 16 * 1024 * 1024
