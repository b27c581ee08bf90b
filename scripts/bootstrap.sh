#!/usr/bin/env bash
# Installs everything the lab and the tests need on a fresh Debian machine, and
# does nothing slow when it is all there already (each step checks first).
#   1. Debian packages: wireguard-go/-tools, nftables/iptables, conntrack,
#      iperf3, coturn + stun-client (interop peers), tcpdump, ping, and
#      docker-compose (validates docker-compose.yml offline; no engine needed),
#      dnsmasq (the lab's DNS server for relay-pool names), prometheus
#      (promtool checks expositions and alert rules; a real server scrapes the lab);
#      podman + runc + netavark/aardvark-dns + mmdebstrap (the images,
#      scripts/images.sh) and qemu-user-static + binfmt-support + arch-test
#      (arm64 images on an amd64 host).
#   2. uv, then the workspace (every service editable, from uv.lock).
#   3. gRPC stubs from protos/.
#   4. The real control plane (kube-apiserver, etcd, kubectl) built from the Go
#      module proxy into a cache outside the repository. (The node binaries
#      of the lab's kubelet mode are built by `make test` and the lab itself,
#      tools/kubenode/build.sh; apt: containerd, containernetworking-plugins,
#      gcc + libc6-dev for pause.)
set -euo pipefail
cd "$(dirname "$0")/.."

export UV_PYTHON_DOWNLOADS=never
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(wireguard-go wireguard-tools nftables iptables conntrack iperf3 coturn
              stun-client tcpdump iputils-ping iproute2 procps docker-compose dnsmasq-base
              podman runc netavark aardvark-dns mmdebstrap qemu-user-static binfmt-support
              arch-test)
# The lab's kubelet mode (wirekube-lab run --kube, tests/integration/kube):
# containerd 1.6 + the CNI plugins on every lab node, a C compiler for pause.
APT_PACKAGES+=(containerd containernetworking-plugins gcc libc6-dev)
APT_PACKAGES+=(prometheus)
# tinyproxy-bin: the lab's real HTTP CONNECT proxy (binary only, no system service).
APT_PACKAGES+=(tinyproxy-bin)
missing=()
APT_PACKAGES+=(graphviz)  # wirekubectl graph --format svg (dot), tested against the lab
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# coturn's package enables a system service on some images; the lab starts its
# own instances, never the system one.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now coturn >/dev/null 2>&1 || true; fi
# Likewise prometheus: tests start their own server, bounded and in a lab.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv"
  python3 -m pip install -q "uv==0.13.8"
fi

uv sync --all-packages --frozen --python python3 -q
# Bytecode, as the services' images have it (pip compiles on install): without
# it every Python process compiles every module it imports, and where
# PYTHONDONTWRITEBYTECODE is set (this CI image) it does so on every start —
# measured 1.6 s of CPU per agent, more than the rest of its start-up. compileall
# skips what is already fresh, so this is quick after the first run.
uv run --no-sync python -m compileall -q -j 0 .venv/lib/python3*/site-packages libs services tools \
  >/dev/null

if [[ -x scripts/gen-protos.sh ]]; then
  scripts/gen-protos.sh
fi

if [[ -x tools/controlplane/build.sh ]]; then
  tools/controlplane/build.sh
fi

# kubelet, kube-proxy, kube-scheduler, kube-controller-manager, CoreDNS and
# pause for the lab's kubelet mode are not built here: `make test` builds them
# alongside the images (scripts/test-deps.sh), and `wirekube-lab run --kube`
# on demand; both cache them like the control plane.
