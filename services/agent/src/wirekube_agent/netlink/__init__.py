"""The agent's only pyroute2 user: links, routes, rules, kernel WireGuard.

Every function here normalises what the kernel reports into the agent's model
values (``Route``, ``Rule``, ``DeviceState``) — the same form ``topology``
produces — so the differ compares like with like and never flaps.
"""
