"""What operators read: the relay-wide counters (``stats``, plain integers the
hot path bumps), their Prometheus exposition (``metrics``) and the RelayAdmin
gRPC service (``service``: stats, connected peers)."""
