#!/bin/sh
# The compose stack's one-shot bootstrap (runs as the admin of /pki):
#   1. waits for the API server;
#   2. installs the CRDs and RBAC from deploy/kustomize/base (mounted at /deploy);
#   3. creates a Node per agent (NODES="name=address ..."), labelled
#      wirekube.io/vpn-enabled=true, with its compose address as InternalIP;
#   4. creates the `default` WireKubeMesh: the compose STUN responders as the
#      only STUN servers (never public ones: the stack must work offline) and
#      the compose relay as an external relay;
#   5. writes a kubeconfig per service account into /kube (a TokenRequest
#      token, the same least-privilege RBAC as in a cluster), then /kube/ready,
#      which the services wait for.
# Idempotent: a second run converges to the same objects.
set -eu
: "${API_ADDRESS:?}" "${STUN_SERVERS:?}" "${RELAY_ADDRESS:?}" "${NODES:?}"
export KUBECONFIG=/pki/admin.kubeconfig
NS=wirekube-system

i=0
until [ -f /pki/ready ] && kubectl get --raw /readyz >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -le 240 ] || { echo "bootstrap: the API server did not become ready" >&2; exit 1; }
  sleep 0.5
done

kubectl apply --server-side --force-conflicts -k /deploy/kustomize/base/crds >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/wirekubemeshes.wirekube.io crd/wirekubepeers.wirekube.io crd/wirekubegateways.wirekube.io >/dev/null
kubectl apply --server-side --force-conflicts -k /deploy/kustomize/base/rbac >/dev/null

for entry in $NODES; do
  name="${entry%%=*}" address="${entry#*=}"
  kubectl apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $name
  labels:
    kubernetes.io/os: linux
    wirekube.io/vpn-enabled: "true"
YAML
  kubectl patch node "$name" --subresource=status --type=merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$address\"},{\"type\":\"Hostname\",\"address\":\"$name\"}]}}" >/dev/null
done

kubectl apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: wirekube.io/v1alpha1
kind: WireKubeMesh
metadata:
  name: default
spec:
  stunServers: [$(echo "$STUN_SERVERS" | sed 's/ /, /g')]
  relay:
    mode: auto
    provider: external
    external:
      endpoint: "$RELAY_ADDRESS:3478"
YAML

for sa in wirekube-agent wirekube-relay wirekube-gateway-controller; do
  token="$(kubectl -n "$NS" create token "$sa" --duration=8760h)"
  out="/kube/$sa.kubeconfig"
  kubectl config set-cluster compose --kubeconfig="$out.tmp" \
    --server="https://$API_ADDRESS:6443" --certificate-authority=/pki/ca.crt --embed-certs >/dev/null
  kubectl config set-credentials "$sa" --kubeconfig="$out.tmp" --token="$token" >/dev/null
  kubectl config set-context compose --kubeconfig="$out.tmp" --cluster=compose --user="$sa" >/dev/null
  kubectl config use-context compose --kubeconfig="$out.tmp" >/dev/null
  chmod 0644 "$out.tmp"
  mv -f "$out.tmp" "$out"
done
touch /kube/ready
echo "bootstrap: CRDs, RBAC, nodes ($NODES), mesh default and kubeconfigs ready"
