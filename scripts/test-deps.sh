#!/usr/bin/env bash
# What `make test` needs beyond scripts/bootstrap.sh, built side by side:
#   * the service images (scripts/images.sh: mmdebstrap and podman, mostly
#     waiting on package downloads, dpkg and layer commits), and
#   * the lab's node binaries (tools/kubenode/build.sh: a Go build that keeps
#     both cores busy).
# Cold, one after the other they took 4-8 + 5 minutes here; side by side the
# images took 4.3 minutes and the node binaries 7 (the Go build fills the
# image build's waits), so 7 in all. Warm, both are cached and this takes
# seconds. Both scripts cache outside the repository and take their own
# locks, so a lab or test started meanwhile waits for them instead of
# building twice.
#
# Usage: scripts/test-deps.sh [images.sh arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

nodelog="$(mktemp -t wirekube-kubenode.XXXXXX.log)"
tools/kubenode/build.sh >"${nodelog}" 2>&1 &
nodepid=$!
stop_node_build() { kill -TERM "${nodepid}" 2>/dev/null || true; }
trap stop_node_build INT TERM

images_rc=0
scripts/images.sh "$@" || images_rc=$?
node_rc=0
wait "${nodepid}" || node_rc=$?
trap - INT TERM
# the node build's log, after the image build's: the two never interleave
cat "${nodelog}" >&2
rm -f "${nodelog}"
if ((node_rc)); then
  echo "test-deps.sh: tools/kubenode/build.sh failed (exit ${node_rc})" >&2
  exit "${node_rc}"
fi
exit "${images_rc}"
