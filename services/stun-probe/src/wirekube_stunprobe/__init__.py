"""wirekube-stun-probe: a STUN server (RFC 5389 UDP+TCP, RFC 5780 with two addresses)."""
