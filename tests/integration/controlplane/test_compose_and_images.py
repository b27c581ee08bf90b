"""docker-compose.yml is validated by a real Compose implementation (Debian's
docker-compose, whose `config` validates against the Compose specification
schema offline, no Docker engine needed), and the Dockerfiles are consistent
with the repository: COPY sources exist, the uv.lock export they run works,
the entry point is the service's console script, only the agent runs as root,
and nothing names an architecture. (The stack itself runs in
tests/integration/compose; the images are built by scripts/images.sh.)"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

SERVICES = {
    "agent": "wirekube-agent",
    "relay": "wirekube-relay",
    "gateway-controller": "wirekube-gateway-controller",
    "stun-probe": "wirekube-stun-probe",
}


def compose(repo: Path, *args: str, file: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "Debian's docker-compose is required (scripts/bootstrap.sh installs it)"
    return subprocess.run(
        [
            exe,
            "-f",
            str(file or repo / "docker-compose.yml"),
            "--project-directory",
            str(repo),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(repo)},
    )


AGENTS = {"agent-1", "agent-2", "agent-3"}


def test_compose_file_is_valid(repo: Path) -> None:
    """The stack tests/integration/compose brings up, as a Compose implementation
    reads it: every service in its own network namespace on one internal
    network with unique fixed addresses (so no port can clash and nothing is
    published), agents with NET_ADMIN + NET_RAW, the tun device and the
    sysctls, everything else hardened; STUN servers only inside the stack."""
    proc = compose(repo, "config", "-q")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(compose(repo, "config").stdout)
    services = config["services"]
    assert set(services) == {
        "etcd",
        "apiserver",
        "bootstrap",
        "stun-probe",
        "stun-probe-2",
        "relay",
        "gateway-controller",
        *AGENTS,
    }
    for name, svc in services.items():
        if "build" in svc:
            assert (repo / svc["build"]["dockerfile"]).is_file(), name
        assert "network_mode" not in svc and not svc.get("ports"), name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
    for name in AGENTS:
        agent = services[name]
        assert sorted(agent["cap_add"]) == ["NET_ADMIN", "NET_RAW"]
        assert agent["devices"] == ["/dev/net/tun:/dev/net/tun"]
        assert agent["environment"]["WIREKUBE_WIREGUARD_BACKEND"] == "userspace"
        assert agent["environment"]["NODE_NAME"] == agent["hostname"]
        assert agent["sysctls"]["net.ipv4.conf.default.disable_policy"] == "1"
    assert all("cap_add" not in services[n] for n in set(services) - AGENTS)
    network = config["networks"]["wirekube"]
    assert network["internal"] is True
    subnet = ipaddress.ip_network(network["ipam"]["config"][0]["subnet"])
    addresses = [s["networks"]["wirekube"]["ipv4_address"] for s in services.values()]
    assert len(addresses) == len(set(addresses)), addresses
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    stun = services["bootstrap"]["environment"]["STUN_SERVERS"].split()
    assert len(stun) == 2
    assert all(ipaddress.ip_address(s.rsplit(":", 1)[0]) in subnet for s in stun)


def test_compose_validator_rejects_a_broken_file(repo: Path, tmp_path: Path) -> None:
    """The validator is a real one: the same file with one error is refused."""
    broken = yaml.safe_load((repo / "docker-compose.yml").read_text())
    broken["services"]["relay"]["replicas_typo"] = 2
    broken["services"]["agent-1"]["cap_add"] = {"NET_ADMIN": True}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    proc = compose(repo, "config", "-q", file=path)
    assert proc.returncode != 0
    assert "Unsupported config option for services.relay: 'replicas_typo'" in proc.stderr
    assert "services.agent-1.cap_add contains an invalid type" in proc.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile(repo: Path, service: str) -> None:
    package = SERVICES[service]
    steps = _instructions(repo / "services" / service / "Dockerfile")
    assert sum(op == "FROM" for op, _ in steps) >= 2, "multi-stage"
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    for op, args in steps:
        if op == "COPY" and "--from=" not in args:
            *sources, _dest = args.split()
            for src in sources:
                assert (repo / src).exists(), f"COPY source {src} missing"
    run = " ".join(args for op, args in steps if op == "RUN")
    assert f"--package {package}" in run and f"./services/{service}" in run
    assert "./libs/common" in run
    # The first step of the image build really works against this uv.lock.
    exported = subprocess.run(
        [
            "uv",
            "export",
            "--quiet",
            "--frozen",
            "--no-dev",
            "--package",
            package,
            "--no-emit-workspace",
            "--offline",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert "--hash=sha256:" in exported.stdout
    scripts = tomllib.loads((repo / "services" / service / "pyproject.toml").read_text())[
        "project"
    ]["scripts"]
    entry = next(args for op, args in final if op == "ENTRYPOINT")
    assert yaml.safe_load(entry) == [package] and package in scripts
    user = next(args for op, args in reversed(final) if op == "USER")
    if service == "agent":
        assert user == "0:0"
        assert "wireguard-tools" in run and "wireguard-go" in run
    else:
        assert not user.startswith("0"), "non-root"
    text = " ".join(f"{op} {args}" for op, args in steps)  # comments dropped
    assert not re.search(r"amd64|x86_64|aarch64|arm64|--platform", text), "architecture-neutral"
