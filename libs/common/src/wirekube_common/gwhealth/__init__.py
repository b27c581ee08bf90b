"""Gateway health checks, probed where they matter: on the gateway peers.

``spec.healthCheck`` asks whether a *gateway peer* can reach the networks
behind it, so the probe runs on each gateway peer's node (in the node agent, or
standalone with ``python -m wirekube_common.gwhealth``), from that node's own
network, and the result is published as a heartbeat Lease that the gateway
controller reads. The controller never probes targets itself: from where it
runs it could only measure its own path (often *through* the active gateway,
which says nothing about the standby peers).

Modules: ``target`` (parse ``spec.healthCheck.target``), ``icmp`` (sans-IO
echo codec), ``probe`` (TCP connect / ICMP echo with a timeout), ``checker``
(consecutive-failure state machine), ``report`` (the Lease wire format, shared
with the controller), ``reporter`` (the agent-side task that ties them up).
"""
