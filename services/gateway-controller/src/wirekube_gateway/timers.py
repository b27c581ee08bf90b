"""Every duration and limit of the gateway controller, each with its reason."""

from __future__ import annotations

# -- leader election ----------------------------------------------------------
# client-go's defaults, which operators already know how to reason about.
#
# A standby takes over this long after it last saw the Lease renewed: the bound
# on failover after a crashed or partitioned leader.
LEASE_DURATION_S = 15.0
# The leader stops acting when it could not renew for this long. Shorter than
# LEASE_DURATION_S so that a leader cut off from the API stops writing before
# anyone else may start; the 5 s margin absorbs request latency and clock-rate
# differences (time is measured locally, never compared across machines).
RENEW_DEADLINE_S = 10.0
# The leader renews, and standbys retry, this often: five renewal attempts fit
# in the renew deadline, so a couple of failed requests never cost leadership.
RETRY_PERIOD_S = 2.0
# Standbys stretch their retry period by up to this fraction at random, so two
# of them never hammer the Lease in lock-step.
RETRY_JITTER = 0.2
# Bound on one election request: well below RENEW_DEADLINE_S, so a hung request
# cannot outlive the leadership it is trying to keep.
ELECTION_REQUEST_TIMEOUT_S = 4.0
# Bound on releasing the Lease at shutdown (SIGTERM): the pod's grace period is
# 30 s; release is an optimisation (instant handover), not a requirement.
RELEASE_TIMEOUT_S = 3.0

# -- reconciling -------------------------------------------------------------
# Time-driven changes (a report going stale, a failback hold ending) are
# noticed within this; cheap, because a pass only reads caches.
TICK_S = 1.0
# A burst of watch events (an agent rollout) costs one pass.
DEBOUNCE_S = 0.05
# Bound on one status write or event; a failed write is retried next pass.
WRITE_TIMEOUT_S = 10.0
# lastHealthCheck moves with every probe, but every status write wakes every
# agent (they all watch gateways). When nothing else changed, it is refreshed
# at most this often: fresh enough for a human, O(1/minute) per gateway.
LAST_HEALTH_CHECK_REFRESH_S = 60.0

# -- failover ----------------------------------------------------------------
# Failing back to an earlier peerRef costs a second disruption (new SNAT
# source, broken connections), so the earlier peer must first stay healthy for
# this many times as long as it takes to declare it unhealthy
# (failureThreshold x intervalSeconds): a flapping peer never wins it back.
FAILBACK_HOLD_FACTOR = 2
# The same hold when health checks are disabled (a re-created gateway peer is
# still setting up WireGuard): the CRD defaults, 3 failures x 30 s.
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_INTERVAL_S = 30

# -- liveness ----------------------------------------------------------------
# /healthz fails when the reconcile or election loop made no progress for this
# long (a wedged process); the kubelet probes every 20 s.
STALL_S = 30.0

# -- peer garbage collection (peergc) -----------------------------------------
# A WireKubePeer whose node left the mesh (Node gone, or no longer labelled
# wirekube.io/vpn-enabled=true) is deleted after this long departed. A minute
# rides out an unlabel undone by hand and a kubelet re-registering its Node,
# and still takes a departed node's key and routes off every other node about
# a minute after it left. --peer-gc-grace overrides it (0 disables the GC).
PEER_GC_GRACE_S = 60.0
# Departures are judged from caches this often; the grace period is measured
# to within one tick.
PEER_GC_TICK_S = 1.0
# At most this many deletes per tick: an accidental mass unlabel (a wrong
# selector) is worked off over several seconds, each one logged, rather than
# in one burst against the API server.
PEER_GC_MAX_DELETES_PER_PASS = 10

# -- managed relay -------------------------------------------------------------
# The mesh Secret is read (one GET, never listed or watched: the controller may
# read no other Secret) at most this often, so a deleted Secret is re-created
# within this. One GET of one object by the leader every 10 s costs nothing.
SECRET_CHECK_S = 10.0
# Random bytes in the relay pool's shared secret: 256 bits, a MAC key's size.
MESH_SECRET_BYTES = 32
