"""Gateway: what the WireKubeGateways ask of this node (routes as a client, forwarding and SNAT as the active peer)."""
