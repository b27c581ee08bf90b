#!/usr/bin/env bash
# Build the WireKube container images with podman, with no container registry:
#   1. a Debian bookworm base image made here by `mmdebstrap --variant=minbase`
#      (python3, python3-venv, python3-pip, ca-certificates) and `podman import`ed
#      as localhost/wirekube/base:bookworm-<arch>-<key>; <key> hashes every input
#      of the base (suite, packages, mirrors, this recipe's revision), so it is
#      made once and again only when one of them changes;
#   2. `podman build --pull=never --network host` of services/<name>/Dockerfile
#      for the four services on that base (PYTHON_IMAGE build argument; the
#      Dockerfiles' own default stays python:3.11-slim-bookworm for Docker users),
#      tagged docker.io/wirekube/<name>:<version> (the version of the service's
#      pyproject.toml, which deploy/kustomize/base pins) and :dev (the dev
#      overlay's tag, never pulled);
#   3. the compose stack's control-plane image, docker.io/wirekube/controlplane:<k8s
#      version>, from the kube-apiserver, etcd and kubectl that
#      tools/controlplane/build.sh keeps in /var/cache/wirekube.
# Podman's layer cache makes a run with nothing changed take seconds; the base is
# built under a lock so concurrent runs wait for one mmdebstrap.
#
# Usage: scripts/images.sh [--arch amd64|arm64] [--save DIR] [--no-controlplane]
#   --arch   build for another architecture (arm64 needs qemu-user-static and
#            binfmt_misc; the control-plane image is built for the host only)
#   --save   also write each image as a docker-archive DIR/<name>-<arch>.tar, for
#            `ctr -n k8s.io images import` (or `podman load`); an archive is
#            rewritten only when its image changed (DIR/<name>-<arch>.id)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SERVICES=(agent relay gateway-controller stun-probe)
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
MIRRORS=(
  "deb http://deb.debian.org/debian ${SUITE} main"
  "deb http://deb.debian.org/debian ${SUITE}-updates main"
  "deb http://deb.debian.org/debian-security ${SUITE}-security main"
)
# Bump when the base recipe below changes in a way the other inputs don't show.
BASE_RECIPE=1
CACHE_ROOT="${WIREKUBE_CACHE_DIR:-/var/cache/wirekube}/images"
# Where the service images are tagged. Several worktrees building on one host
# share podman's store: under one name, a build of another tree can take the
# tag between this one's build and its --save, and the archive then holds the
# other tree's code (seen: a lab test ran another branch's agent). A tree of
# its own (e.g. localhost/wirekube-<name>) avoids that; the lab's kubelet mode
# tags images by their last path element (agent, relay, ...), whatever the repo.
REPO="${WIREKUBE_IMAGE_REPO:-docker.io/wirekube}"

host_arch="$(dpkg --print-architecture)"
arch="$host_arch"
save_dir=""
controlplane=1
while (($#)); do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --save) save_dir="$2"; shift 2 ;;
    --no-controlplane) controlplane=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ "$arch" == "$host_arch" ]] || controlplane=0

log() { echo "images.sh: $*" >&2; }
start=$(date +%s.%N)
elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# --- podman on this kind of machine -------------------------------------------
# Podman as root asks the runtime for nofile 1048576 in every container; where
# the host's own hard limit is lower and root lacks CAP_SYS_RESOURCE (this kind
# of machine: 20000) runc refuses to start any container. Default ulimits equal
# to the host's hard limits are the most a container can get here (nproc also
# capped at kernel.pid_max: above it runc's setrlimit was refused here and the
# limit means nothing anyway). runc is the
# runtime the packages install (crun is not installed). A drop-in keeps the
# packaged containers.conf untouched and is rewritten only when it differs.
ensure_podman_config() {
  local dropin=/etc/containers/containers.conf.d/50-wirekube.conf
  local want nofile nproc
  nofile="$(ulimit -Hn)"
  nproc="$(ulimit -Hu)"
  [[ "$nproc" == unlimited ]] && nproc="$(cat /proc/sys/kernel/pid_max)"
  nproc=$((nproc < $(cat /proc/sys/kernel/pid_max) ? nproc : $(cat /proc/sys/kernel/pid_max)))
  [[ "$nofile" == unlimited ]] && nofile=1048576
  want="# Written by wirekube scripts/images.sh: see ensure_podman_config there.
[containers]
default_ulimits = [
  \"nofile=$nofile:$nofile\",
  \"nproc=$nproc:$nproc\",
]

[engine]
runtime = \"runc\"
"
  if [[ ! -f "$dropin" ]] || [[ "$(cat "$dropin")"$'\n' != "$want" ]]; then
    mkdir -p "$(dirname "$dropin")"
    printf '%s' "$want" >"$dropin"
    log "wrote $dropin (runtime runc, default ulimits = the host's hard limits)"
  fi
}

version_of() {  # the version in a pyproject.toml
  sed -n 's/^version = "\(.*\)"$/\1/p' "$1" | sed -n 1p
}

# --- 1. base ------------------------------------------------------------------
base_key() {
  printf '%s\n' "$SUITE" "$arch" "$BASE_PACKAGES" "${MIRRORS[@]}" "$BASE_RECIPE" \
    | sha256sum | cut -c1-12
}

build_base() {
  local tag="$1"
  podman image exists "$tag" && return 0
  mkdir -p "$CACHE_ROOT"
  exec 8>"$CACHE_ROOT/.base.lock"
  if ! flock -n 8; then
    log "another run is building the base image; waiting for it"
    flock 8
  fi
  if podman image exists "$tag"; then exec 8>&-; return 0; fi
  command -v mmdebstrap >/dev/null || { log "mmdebstrap missing (scripts/bootstrap.sh installs it)"; exit 2; }
  local tmp
  tmp="$(mktemp -d "$CACHE_ROOT/.tmp-base.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log "building the base image $tag with mmdebstrap (about a minute)"
  local t0=$SECONDS
  mmdebstrap --quiet --variant=minbase --architectures="$arch" \
    --include="$BASE_PACKAGES" \
    --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/*' \
    "$SUITE" "$tmp/base.tar" "${MIRRORS[@]}"
  podman import --quiet --arch "$arch" --os linux \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tmp/base.tar" "$tag" >/dev/null
  rm -rf "$tmp"
  trap - EXIT
  exec 8>&-
  log "base image $tag built in $((SECONDS - t0))s"
}

# --- 2. services --------------------------------------------------------------
# RUN steps see the host's CA bundle (mounted, not copied: it is not in any
# layer), so builds trust what the host trusts, e.g. a site's TLS proxy to PyPI.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
build_mounts=()
[[ -f "$HOST_CA" ]] && build_mounts=(-v "$HOST_CA:$HOST_CA:ro")

# An image is rebuilt only when its inputs changed: their content hash (every
# file git tracks or would track under the paths it copies, tests aside, which
# includes the Dockerfile; and the base) is a label on the image. Podman's layer cache would get there too,
# but spends ~10 s per image re-hashing the context to find that out.
inputs_key() {  # inputs_key PATH...
  { printf '%s\n' "$base" "$arch"
    # Tests are copied into the build stage but never into an image.
    git ls-files -z -co --exclude-standard -- "$@" ':(exclude)*/tests/*' | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

up_to_date() {  # up_to_date REF KEY
  [[ "$(podman image inspect --format '{{index .Labels "io.wirekube.inputs"}}' "$1" 2>/dev/null)" == "$2" ]]
}

run_build() {  # run_build LOG podman-build-args... ; shows the log only on failure
  local logf="$1"; shift
  if ! podman build --pull=never --network host "${build_mounts[@]}" "$@" >"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    log "build failed; full log: $logf"
    exit 1
  fi
}

build_service() {
  local name="$1" version key ref tags=()
  version="$(version_of "services/$name/pyproject.toml")"
  ref="$REPO/$name"
  if [[ "$arch" == "$host_arch" ]]; then
    tags=(-t "$ref:$version" -t "$ref:dev")
  else
    tags=(-t "$ref:$version-$arch" -t "$ref:dev-$arch")
  fi
  key="$(inputs_key pyproject.toml uv.lock libs/common "services/$name" .dockerignore)"
  if up_to_date "${tags[1]}" "$key"; then
    log "$name: up to date (${tags[1]})"
    return 0
  fi
  local t0=$SECONDS
  run_build "$CACHE_ROOT/build-$name-$arch.log" --arch "$arch" \
    --build-arg "PYTHON_IMAGE=$base" --label "io.wirekube.inputs=$key" \
    -f "services/$name/Dockerfile" "${tags[@]}" .
  log "$name: built ${tags[1]} in $((SECONDS - t0))s"
}

# --- 3. control plane (compose stack) ------------------------------------------
build_controlplane() {
  local bin k8s key ref
  bin="$(tools/controlplane/build.sh --print-dir)"
  k8s="$(sed -n 's/^K8S_VERSION=//p' tools/controlplane/build.sh)"
  ref="docker.io/wirekube/controlplane:$k8s"
  key="$( { echo "$bin"; inputs_key tools/controlplane; } | sha256sum | cut -c1-16)"
  if up_to_date "$ref" "$key"; then
    log "controlplane: up to date ($ref)"
    return 0
  fi
  local t0=$SECONDS
  run_build "$CACHE_ROOT/build-controlplane.log" \
    --build-arg "PYTHON_IMAGE=$base" --label "io.wirekube.inputs=$key" \
    -f tools/controlplane/Dockerfile -t "$ref" -t docker.io/wirekube/controlplane:dev "$bin"
  log "controlplane: built $ref in $((SECONDS - t0))s"
}

save_image() {  # save_image NAME REF...
  local name="$1"; shift
  local id out="$save_dir/$name-$arch.tar"
  id="$(podman image inspect --format '{{.Id}}' "$1")"
  if [[ -f "$out" && "$(cat "$save_dir/$name-$arch.id" 2>/dev/null)" == "$id" ]]; then
    return 0
  fi
  rm -f "$out.tmp"
  podman save --quiet --format docker-archive -m -o "$out.tmp" "$@"
  mv -f "$out.tmp" "$out"
  echo "$id" >"$save_dir/$name-$arch.id"
  log "saved $out"
}

# --- another architecture: qemu-user-static through binfmt_misc ---------------
ensure_emulation() {
  local qemu
  case "$arch" in
    arm64) qemu=qemu-aarch64 ;;
    *) log "no emulation recipe for $arch (arm64 is the one supported)"; exit 2 ;;
  esac
  [[ -e /proc/sys/fs/binfmt_misc/$qemu ]] && return 0
  command -v update-binfmts >/dev/null \
    || { log "qemu-user-static and binfmt-support are needed for $arch (scripts/bootstrap.sh)"; exit 2; }
  [[ -e /proc/sys/fs/binfmt_misc/register ]] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable "$qemu"
  [[ -e /proc/sys/fs/binfmt_misc/$qemu ]] || { log "could not register $qemu with binfmt_misc"; exit 2; }
}

command -v podman >/dev/null || { log "podman missing (scripts/bootstrap.sh installs it)"; exit 2; }
ensure_podman_config
[[ "$arch" == "$host_arch" ]] || ensure_emulation
base="localhost/wirekube/base:${SUITE}-${arch}-$(base_key)"
build_base "$base"

mkdir -p "$CACHE_ROOT"
images=()
for name in "${SERVICES[@]}"; do
  build_service "$name"
done
((controlplane)) && build_controlplane

suffix=""
[[ "$arch" == "$host_arch" ]] || suffix="-$arch"
printf '%-48s %-10s %s\n' IMAGE ARCH SIZE
for name in "${SERVICES[@]}" controlplane; do
  [[ "$name" == controlplane && $controlplane == 0 ]] && continue
  if [[ "$name" == controlplane ]]; then
    version="$(sed -n 's/^K8S_VERSION=//p' tools/controlplane/build.sh)"
  else
    version="$(version_of "services/$name/pyproject.toml")"
  fi
  ref="$REPO/$name:$version$suffix"
  # the compose file names the control-plane image: it keeps its own name
  [[ "$name" == controlplane ]] && ref="docker.io/wirekube/controlplane:$version"
  images+=("$name=$ref")
  printf '%-48s %-10s %s\n' "$ref" \
    "$(podman image inspect --format '{{.Architecture}}' "$ref")" \
    "$(podman image inspect --format '{{.Size}}' "$ref" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
done

if [[ -n "$save_dir" ]]; then
  mkdir -p "$save_dir"
  for entry in "${images[@]}"; do
    name="${entry%%=*}"; ref="${entry#*=}"
    dev="${ref%:*}:dev$suffix"
    save_image "$name" "$ref" "$dev"
  done
fi
log "done in $(elapsed)s"
