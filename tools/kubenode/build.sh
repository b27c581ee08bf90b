#!/usr/bin/env bash
# Build what turns a lab node into a real Kubernetes node, from source, offline
# apart from the Go module proxy:
#   kubelet, kube-proxy, kube-scheduler, kube-controller-manager
#       from k8s.io/kubernetes at the version tools/controlplane pins (this
#       module's go.mod must pin the same one: the node and the apiserver the
#       lab runs are one release);
#   coredns   from github.com/coredns/coredns (its own module, `go install`);
#   pause     the pod sandbox's init, compiled statically from the C source in
#             the same Kubernetes module (build/pause/linux/pause.c).
# coredns and pause are static: the lab packs each into a one-file image.
#
# Cached outside the repository like tools/controlplane/build.sh, keyed by the
# versions, published with one rename(2) after a smoke check, serialised by a
# lock file:
#   ${WIREKUBE_CACHE_DIR:-/var/cache/wirekube}/kubenode/<key>/bin/
#
# Usage: tools/kubenode/build.sh [--print-dir]
set -euo pipefail

K8S_VERSION=v1.34.4
COREDNS_VERSION=v1.12.1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${WIREKUBE_CACHE_DIR:-/var/cache/wirekube}/kubenode"
KEY="k8s-${K8S_VERSION}-coredns-${COREDNS_VERSION}"
DEST="${CACHE_ROOT}/${KEY}/bin"
BINARIES=(kubelet kube-proxy kube-scheduler kube-controller-manager coredns pause)

print_dir=0
if [[ "${1:-}" == "--print-dir" ]]; then
  print_dir=1
fi

log() { echo "kubenode/build.sh: $*" >&2; }

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
  log "cached: ${DEST}; checked in $(elapsed)s"
  finish
fi

for mod in "${HERE}/go.mod" "${HERE}/../controlplane/go.mod"; do
  grep -qE "^(require)?[[:space:]]*k8s.io/kubernetes ${K8S_VERSION}\$" "${mod}" \
    || { log "${mod} does not pin k8s.io/kubernetes ${K8S_VERSION}; the node and the control plane must be one release"; exit 2; }
done
command -v go >/dev/null 2>&1 \
  || { log "the Go toolchain is needed to build the node binaries once (scripts/bootstrap.sh installs it)"; exit 2; }
command -v cc >/dev/null 2>&1 \
  || { log "a C compiler is needed for the pause binary (apt-get install gcc libc6-dev)"; exit 2; }

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
  if [[ -n "${gopid}" ]]; then kill -TERM -- "-${gopid}" 2>/dev/null || true; fi
  rm -rf "${tmp}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building kubelet, kube-proxy, kube-scheduler, kube-controller-manager ${K8S_VERSION}, coredns ${COREDNS_VERSION} and pause into ${DEST} (~5 min cold on 2 cores, ~2 min with a warm Go build cache)"
ver_pkg=k8s.io/component-base/version
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X ${ver_pkg}.gitVersion=${K8S_VERSION} -X ${ver_pkg}.gitMajor=1"
ldflags+=" -X ${ver_pkg}.gitMinor=${minor} -X ${ver_pkg}.gitTreeState=clean"
# CGO off, as Kubernetes' own release builds: nothing here needs libc.
export CGO_ENABLED=0
setsid go -C "${HERE}" build -trimpath -ldflags "${ldflags}" -o "${tmp}/bin/" \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-controller-manager &
gopid=$!
wait "${gopid}"
# CoreDNS is its own module with its own dependency graph: `go install
# module@version` builds it exactly as its go.mod says, outside ours.
GOBIN="${tmp}/bin" GOFLAGS=-buildvcs=false setsid go install -trimpath -ldflags "-s -w" \
  "github.com/coredns/coredns@${COREDNS_VERSION}" &
gopid=$!
wait "${gopid}"
gopid=""

pause_src="$(go -C "${HERE}" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
cc -Os -Wall -Werror -static -DVERSION="${K8S_VERSION}-wirekube" -o "${tmp}/bin/pause" "${pause_src}"
strip "${tmp}/bin/pause" 2>/dev/null || true

"${tmp}/bin/kubelet" --version >&2
"${tmp}/bin/kube-proxy" --version >&2
"${tmp}/bin/kube-scheduler" --version >&2
"${tmp}/bin/kube-controller-manager" --version >&2
# sed, not head: head exits after one line and coredns, writing its second,
# dies of SIGPIPE, which pipefail turns into a failed build (exit 141).
"${tmp}/bin/coredns" -version | sed -n 1p >&2
"${tmp}/bin/pause" -v >&2

mkdir -p "${CACHE_ROOT}/${KEY}"
if ! mv -T "${tmp}/bin" "${DEST}" 2>/dev/null; then
  rm -rf "${DEST}.old"
  mv -T "${DEST}" "${DEST}.old"
  mv -T "${tmp}/bin" "${DEST}"
  rm -rf "${DEST}.old"
fi
log "built ${DEST} in $(elapsed)s"
finish
