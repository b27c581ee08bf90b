"""Gateways that cannot work get a clear Ready=False condition; the controller
keeps running and serving the other gateways."""

from __future__ import annotations

from typing import Any

from .conftest import GatewayEnv, ready_condition, wait_for


def wait_reason(env: GatewayEnv, gw: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = env.status(gw)
        return status if ready_condition(status).get("reason") == reason else None

    return wait_for(check, 15, f"{gw}: Ready reason {reason}")


def test_malformed_gateways_get_conditions_not_crashes(gateway_env: GatewayEnv) -> None:
    env = gateway_env
    ctl = env.start_controller(env.name("ctl"))
    env.leader([ctl])
    good, passive, client = env.name("node-good"), env.name("node-idle"), env.name("node-cli")
    env.create_peer(good, "10.90.0.1/32")
    env.create_peer(passive, passive=True)
    env.create_peer(client, "10.91.0.1/32")
    ghost1, ghost2 = env.name("node-ghost1"), env.name("node-ghost2")
    route = [{"cidr": "192.168.240.0/24"}]

    ghosts = env.name("gw-ghosts")
    env.create_gateway(ghosts, {"peerRefs": [ghost1, ghost2], "routes": route})
    only_passive = env.name("gw-passive")
    env.create_gateway(only_passive, {"peerRefs": [passive], "routes": route})
    bad_target = env.name("gw-badtarget")
    env.create_gateway(
        bad_target,
        {"peerRefs": [good], "routes": route,
         "healthCheck": {"enabled": True, "target": "not a host:xyz"}},
    )  # fmt: skip
    no_clients = env.name("gw-noclients")
    env.create_gateway(
        no_clients, {"peerRefs": [good], "clientRefs": [env.name("node-nobody")], "routes": route}
    )

    status = wait_reason(env, ghosts, "NoPeers")
    assert "activePeer" not in status and status["ready"] is False
    assert status["peerHealth"] == {ghost1: "unhealthy", ghost2: "unhealthy"}
    assert f"{ghost1}: unhealthy (no such WireKubePeer)" in ready_condition(status)["message"]

    status = wait_reason(env, only_passive, "NoPeers")
    assert "no allowedIPs (passive)" in ready_condition(status)["message"]

    status = wait_reason(env, bad_target, "InvalidHealthCheck")
    assert "healthCheck.target cannot be probed" in ready_condition(status)["message"]
    assert status["ready"] is False

    status = wait_reason(env, no_clients, "NoClients")
    assert status["activePeer"] == good and status["routesInjected"] == 0
    assert (
        f"clientRefs without a WireKubePeer: {env.name('node-nobody')}"
        in (ready_condition(status)["message"])
    )

    # The controller is fine, and fixing the world fixes the gateway.
    assert ctl.alive and ctl.http("/livez")[0] == 200
    env.create_peer(ghost2, "10.92.0.1/32")
    status = wait_reason(env, ghosts, "Active")
    assert status["activePeer"] == ghost2 and status["ready"] is True
    assert status["routesInjected"] == 1

    # A spec change is acknowledged through observedGeneration.
    env.patch_gateway(ghosts, {"peerRefs": [good, ghost2]})
    generation = env.gateway(ghosts)["metadata"]["generation"]
    status = wait_for(
        lambda: (s := env.status(ghosts)).get("observedGeneration") == generation and s,
        15,
        "observedGeneration follows the spec",
    )
    assert ready_condition(status)["observedGeneration"] == generation
    # Sticky: putting a healthy peer first does not preempt the active one
    # before the failback hold (3 x 30 s x 2 without health checks).
    assert status["activePeer"] == ghost2
