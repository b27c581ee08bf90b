"""NetTasks.configure: a new port or STUN server list starts discovery at once."""

from __future__ import annotations

from wirekube_agent.endpoint.tasks import NetTasks
from wirekube_common import wgkey


def test_a_changed_configuration_requests_a_discovery_round() -> None:
    net = NetTasks(wgkey.generate_private_key(), lambda: None)
    assert not net.recheck.is_set()
    net.configure(51820, ("198.18.0.5:3478", "198.18.0.6:3478"))
    assert net.recheck.is_set()  # the first pass: no waiting out NETCHECK_RETRY_S
    net.recheck.clear()
    net.configure(51820, ("198.18.0.5:3478", "198.18.0.6:3478"))
    assert not net.recheck.is_set()  # every later pass with the same settings: nothing
    net.configure(51821, ("198.18.0.5:3478", "198.18.0.6:3478"))
    assert net.recheck.is_set()
    net.recheck.clear()
    net.configure(51821, ())
    assert net.recheck.is_set()
