"""Status: what this node publishes about itself (WireKubePeer status, path-change Events)."""
