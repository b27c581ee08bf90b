"""The agent's Kubernetes adapter. Only ``client`` and ``watch`` import the
kubernetes package; ``translate`` turns API dicts into the agent's model."""
