"""Endpoint: where other nodes reach this node, the underlay socket on the WireGuard port, NAT discovery, and this node's own WireKubePeer."""
