"""Keys: this node's WireGuard key pair, stored and rotated."""
