"""Every duration and limit of the agent, each with the reason for its value."""

from __future__ import annotations

# Full resync: re-read the kernel and re-assert routes, rules and peers even
# when nothing changed in the API. Other agents on a node (CNIs, kube-proxy,
# cleanup scripts) flush tables and rules; 10 s bounds how long we stay broken.
RESYNC_INTERVAL_S = 10.0

# Coalesce a burst of watch events (a rolling upgrade updates hundreds of peers
# within a second) into one reconcile. 10 ms is far below any human-visible
# delay, and events arriving while a pass runs are coalesced anyway.
RECONCILE_DEBOUNCE_S = 0.01

# WireGuard re-handshakes every 2 minutes (REKEY_AFTER_TIME) on an active
# session and keepalives every 25 s; a handshake older than REJECT_AFTER_TIME
# (180 s) means the session is dead.
HANDSHAKE_FRESH_S = 180.0

# Our own WireKubePeer status goes through a token bucket: a burst of 5, then
# one write per 5 s at most, so status writes per agent are bounded whatever N
# is (total writes O(N), never O(N^2)) while the status stays seconds behind
# the truth at worst. Writes are also spaced: a start-up changes every peer's
# path within a second or two (relay up, then direct up), and a burst spent in
# the first few hundred milliseconds left the final table to the slow refill
# (seen in the lab: the status settled 3 s after the paths did).
STATUS_BURST = 5.0
STATUS_REFILL_S = 5.0
STATUS_SPACING_S = 0.5
# lastHandshake alone changes every ~2 minutes per session; publishing only when
# it moved by this much keeps it useful without a write per rekey.
STATUS_HANDSHAKE_GRANULARITY_S = 60.0
# status.peerPaths' details (phase, since, probe RTT and answers, the next
# retry) change with every probe and never cause a write themselves (a quiet
# mesh writes nothing); they ride along with writes made for other reasons.
# The agent samples them this often, and at every path change, so what rides
# along is at most this old, and between samples the entries come from a cache.
STATUS_DETAIL_SAMPLE_S = 60.0
# status.peerPaths lists each peer's probe candidates only up to this many
# peers: an entry is ~200 bytes without them and ~350 with them, and the whole
# object must stay well inside etcd's 1.5 MiB request limit at the CRD's 4096
# peers (4096 x 200 B = 0.8 MiB). Small meshes, where `why` is read most, get
# the detail.
STATUS_CANDIDATES_MAX_PEERS = 256

# (Watch timeouts live with the informer: wirekube_common.kube.watch.)

# Endpoint discovery is cheap but not free (STUN, IMDS); a node's public
# endpoint rarely changes, and changed local addresses or a direct path that
# died trigger an immediate re-check (see endpoint.tasks).
ENDPOINT_RECHECK_INTERVAL_S = 60.0

# AWS IMDSv2 answers in a few ms on EC2; anywhere else the address is
# unroutable, so a short timeout keeps non-EC2 start-up fast.
IMDS_TIMEOUT_S = 0.5

# Persistent keepalive for peers we create: 25 s keeps NAT mappings alive on
# virtually every NAT (the shortest common UDP timeout is 30 s).
DEFAULT_PERSISTENT_KEEPALIVE_S = 25

# How long to wait for wireguard-go to create its UAPI socket after start.
USERSPACE_START_TIMEOUT_S = 5.0

# -- path probing (disco) -----------------------------------------------------
# While a burst lasts, every candidate endpoint of a peer is probed this often.
# Half a second keeps a burst to a handful of packets and makes the probe's
# round trip, not the schedule, the upgrade delay.
PROBE_INTERVAL_S = 0.5
# A burst: long enough for both sides' bursts to overlap when one starts in
# reaction to the other's first probe (that is what opens two port-restricted
# NATs at once), short enough that a hopeless pair costs a few packets.
PROBE_BURST_S = 3.0
# The first burst for a new peer covers agents that start a few seconds apart.
INITIAL_PROBE_BURST_S = 10.0
# An answered probe counts as "the path works now" for this long: a couple of
# probe intervals plus a slow round trip.
PONG_FRESH_S = 3.0
# Direct paths in use are probed this often, so their death is noticed well
# within handshakeTimeoutSeconds (the fallback deadline).
HEARTBEAT_S = 1.0
# Two heartbeats in a row unanswered (plus a probe tick of slack): the path
# in use may have moved (the peer's NAT rebound), so every candidate is
# probed again, well before the fallback deadline.
HEARTBEAT_MISSED_S = 2.5 * HEARTBEAT_S
# We answer a peer's burst with ours, but not within this long after our own
# last burst: until then the peer's probes may be its answer to ours, and
# answering them again keeps the two probing each other forever. The peer
# answers while our probes are fresh (up to PONG_FRESH_S after our last one),
# its burst lasts PROBE_BURST_S and its probes stay fresh PONG_FRESH_S more;
# one reconcile tick (1 s) of slack on top. (PROBE_BURST_S + PONG_FRESH_S was
# too short: a pair whose answers came late kept bursting every 9 s instead
# of once per retry interval; seen in the lab.)
REACT_COOLDOWN_S = PROBE_BURST_S + 2 * PONG_FRESH_S + 1.0
# A relay link that drops is reconnected within a backoff step (from 0.2 s),
# and a dead replica's flows move to a live one within 5 s (relay.timers):
# for that long relayed peers stay on the relay instead of being moved to an
# unproven direct path and back.
RELAY_LOSS_GRACE_S = 5.0
# Addresses a peer's probes came from are kept as candidates this long.
LEARNED_ENDPOINT_TTL_S = 120.0

# A NodePort relay's address may be another node's ExternalIP, so the agent
# lists the Nodes (wirekube_common.relayaddress) — from the API server's watch
# cache, but every agent doing it every resync would cost O(nodes^2) per
# interval. It relists when the controller's choice in the mesh status
# changes (the controller watches the Nodes) and otherwise this often.
RELAY_NODES_REFRESH_S = 300.0

# -- health (/livez, /readyz) -------------------------------------------------------
# Liveness fails when the control loop has not finished a pass for this long.
# A pass runs at least every second (reconciler.TICK_S) and a slow one takes a
# few seconds (wireguard-go start-up is bounded by USERSPACE_START_TIMEOUT_S,
# STUN and IMDS by their own timeouts), so a minute without a pass is a wedged
# loop, not a busy one; with the DaemonSet's probe (period 10 s, 3 failures)
# the kubelet restarts a wedged agent within about 90 s.
LIVENESS_PASS_STALL_S = 60.0
