"""The agent's relay side: a pool of registered relay links and the WireGuard<->relay bridge.

Self-contained. The agent runs the bridge and its pool in a worker process of
their own (``worker.BridgeWorker``, the same calls over a socket pair; its
docstring says why), so that the agent's Python work never delays a relayed
packet. In-process API::

    from wirekube_agent.relay import DnsSource, RelayBridge, RelayPool

    pool = RelayPool(private_key, addresses=[("203.0.113.7", 3478)])
    #   or RelayPool(private_key, dns_source=DnsSource("relay.example", 3478,
    #                nameservers=["10.0.0.53"]))      # re-resolved every 30 s
    bridge = RelayBridge(private_key, wg_listen_port=51820, relay_pool=pool)
    bridge.start()                          # connects + registers to every replica
    bridge.set_relayed_peers({key_b, key_c})  # raw 32-byte public keys; idempotent
    host, port = bridge.endpoint_for(key_b)   # set WireGuard peer key_b's endpoint to this
    bridge.stats(key_b)                     # PeerStats: frames/bytes each way, last_rx, replica
    bridge.last_rx(key_b)                   # monotonic time of last frame via relay, or None
    bridge.unknown_sources                  # {key: frames} from peers we do not relay (hint
                                            #  for path logic: that peer relays to us)
    pool.live_replicas()                    # ("ip:port", ...) currently registered
    bridge.stop()

Semantics the agent can rely on:

* ``endpoint_for`` stays the same for a key as long as it stays in the
  relayed set; removing and re-adding a key gives a new port. A bridge
  given its predecessor's ports (``RelayBridge(..., ports=)``) binds each
  key's old port again where it is free: WireGuard's endpoints outlive an
  agent restart (relay/ports.py).
* A flow to one peer uses one replica (rendezvous hashing on the key pair,
  so both ends pick the same one); if that replica dies the flow moves to a
  live one within 5 s; replicas that appear at a re-resolve are used then.
* Keys are never logged in full by the hot path; private keys never leave
  ``link.register``'s X25519 computation.
* Threads: one uplink thread, one reader thread per replica, one pool
  watchdog. All are daemons and are joined by ``stop()``.
"""

from wirekube_agent.relay.bridge import PeerStats, RelayBridge
from wirekube_agent.relay.link import RelayLink, RelayRejected, register
from wirekube_agent.relay.pool import DnsSource, RelayPool, parse_hostport, rendezvous_pick

__all__ = [
    "DnsSource",
    "PeerStats",
    "RelayBridge",
    "RelayLink",
    "RelayPool",
    "RelayRejected",
    "parse_hostport",
    "register",
    "rendezvous_pick",
]
