"""The relay from the agent's side: where the links connect (``target``, pure)
and the bridge's lifecycle (``manager``). The links and the bridge themselves
are ``wirekube_agent.relay`` (the hot path, in a worker process)."""
