#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the tests and the lab:
# kube-apiserver and kubectl from k8s.io/kubernetes and etcd from
# go.etcd.io/etcd/server/v3, at the versions pinned in ./go.mod (Go is a build
# tool here only; nothing in the product imports this module).
#
# The binaries are cached outside the repository, keyed by version:
#   ${WIREKUBE_CACHE_DIR:-/var/cache/wirekube}/controlplane/k8s-<ver>-etcd-<ver>/bin/
# A run with the cache present returns at once. A build goes into a temporary
# directory next to the cache and is renamed into place in one rename(2), so an
# interrupted build never leaves a half-filled cache; concurrent runs serialise
# on a lock file and the second one finds the cache built by the first.
#
# Usage: tools/controlplane/build.sh [--print-dir]
#   --print-dir  print only the bin directory on stdout (progress goes to stderr)
# Exit status is non-zero when the build fails; the Go error is shown as is.
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${WIREKUBE_CACHE_DIR:-/var/cache/wirekube}/controlplane"
KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"
DEST="${CACHE_ROOT}/${KEY}/bin"
BINARIES=(kube-apiserver kubectl etcd)

print_dir=0
if [[ "${1:-}" == "--print-dir" ]]; then
  print_dir=1
fi

log() { echo "controlplane/build.sh: $*" >&2; }

cache_complete() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${DEST}/${b}" ]] || return 1
  done
}

finish() {
  if (( print_dir )); then
    echo "${DEST}"
  fi
  exit 0
}

start=$(date +%s.%N)
elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

if cache_complete; then
  log "cached: ${DEST} (kube-apiserver ${K8S_VERSION}, kubectl ${K8S_VERSION}, etcd ${ETCD_VERSION}); checked in $(elapsed)s"
  finish
fi

# The pins in go.mod are the source of truth; refuse to build under a cache key
# that would lie about them.
grep -qE "^[[:space:]]*k8s.io/kubernetes ${K8S_VERSION}\$" "${HERE}/go.mod" \
  || { log "go.mod does not pin k8s.io/kubernetes ${K8S_VERSION}; update K8S_VERSION"; exit 2; }
grep -qE "^[[:space:]]*go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" "${HERE}/go.mod" \
  || { log "go.mod does not pin go.etcd.io/etcd/server/v3 ${ETCD_VERSION}; update ETCD_VERSION"; exit 2; }

command -v go >/dev/null 2>&1 \
  || { log "the Go toolchain is needed to build the control plane once (scripts/bootstrap.sh installs it)"; exit 2; }

mkdir -p "${CACHE_ROOT}"
exec 9>"${CACHE_ROOT}/.build-${KEY}.lock"
if ! flock -n 9; then
  log "another build of ${KEY} is running; waiting for it"
  flock 9
fi
if cache_complete; then
  log "cached: ${DEST} (built by a concurrent run); waited $(elapsed)s"
  finish
fi

tmp="$(mktemp -d "${CACHE_ROOT}/.tmp-${KEY}.XXXXXX")"
gopid=""
cleanup() {
  # An interrupted run leaves neither a half-filled cache nor a go build behind.
  if [[ -n "${gopid}" ]]; then kill -TERM -- "-${gopid}" 2>/dev/null || true; fi
  rm -rf "${tmp}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building kube-apiserver + kubectl ${K8S_VERSION} and etcd ${ETCD_VERSION} with $(go version | awk '{print $3}') into ${DEST} (a first build takes ~10-20 min on 2 cores; later ones reuse the Go build cache)"
# -X stamps the real release version into the binaries (what `kubectl version`
# and /version report); without it a module build says v0.0.0-master.
ver_pkg=k8s.io/component-base/version
cli_pkg=k8s.io/client-go/pkg/version
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in "${ver_pkg}" "${cli_pkg}"; do
  ldflags+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor}"
  ldflags+=" -X ${p}.gitTreeState=clean"
done
# In its own process group (setsid) so that cleanup() can stop the go command
# and every compiler it started.
setsid go -C "${HERE}" build -trimpath -ldflags "${ldflags}" -o "${tmp}/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 &
gopid=$!
wait "${gopid}"
gopid=""
# `go build` names the etcd main package after its import path: server (v3 is
# a major-version suffix). Give it its real name.
if [[ -x "${tmp}/bin/server" ]]; then
  mv "${tmp}/bin/server" "${tmp}/bin/etcd"
elif [[ -x "${tmp}/bin/v3" ]]; then
  mv "${tmp}/bin/v3" "${tmp}/bin/etcd"
fi

# Smoke-check every binary before publishing the cache.
"${tmp}/bin/kube-apiserver" --version >&2
"${tmp}/bin/kubectl" version --client=true >&2
"${tmp}/bin/etcd" --version | sed -n 1p >&2  # sed reads to the end: head would SIGPIPE the binary (pipefail: exit 141)

mkdir -p "${CACHE_ROOT}/${KEY}"
if ! mv -T "${tmp}/bin" "${DEST}" 2>/dev/null; then
  # A stale, incomplete directory (e.g. from a manual copy) is in the way.
  rm -rf "${DEST}.old"
  mv -T "${DEST}" "${DEST}.old"
  mv -T "${tmp}/bin" "${DEST}"
  rm -rf "${DEST}.old"
fi
log "built ${DEST} in $(elapsed)s"
finish
