#!/bin/sh
# The compose stack's kube-apiserver. On first start it makes the stack's PKI
# in /pki (a named volume): a CA, the API server's serving certificate (for
# its compose address, the name `apiserver` and localhost), the service-account
# signing key and an admin client certificate (system:masters) with its
# kubeconfig; later starts reuse them. Then it runs the API server against the
# etcd service. Needs API_ADDRESS (this container's address on the stack's
# network) and ETCD_URL. The bootstrap service (bootstrap.sh) takes it from there.
set -eu
P=/pki
: "${API_ADDRESS:?API_ADDRESS must be set}" "${ETCD_URL:?ETCD_URL must be set}"

if [ ! -f "$P/ready" ]; then
  cd "$P"
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  key ca.key
  openssl req -x509 -new -key ca.key -subj /CN=wirekube-compose-ca -days 3650 -out ca.crt
  key apiserver.key
  printf 'subjectAltName=DNS:apiserver,DNS:localhost,IP:127.0.0.1,IP:%s\nextendedKeyUsage=serverAuth\n' \
    "$API_ADDRESS" >apiserver.ext
  openssl req -new -key apiserver.key -subj /CN=kube-apiserver |
    openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  key admin.key
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -new -key admin.key -subj "/O=system:masters/CN=compose-admin" |
    openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile client.ext -out admin.crt 2>/dev/null
  key sa.key
  openssl pkey -in sa.key -pubout -out sa.pub
  kubectl config set-cluster compose --kubeconfig=admin.kubeconfig \
    --server="https://$API_ADDRESS:6443" --certificate-authority=ca.crt --embed-certs >/dev/null
  kubectl config set-credentials admin --kubeconfig=admin.kubeconfig \
    --client-certificate=admin.crt --client-key=admin.key --embed-certs >/dev/null
  kubectl config set-context compose --kubeconfig=admin.kubeconfig \
    --cluster=compose --user=admin >/dev/null
  kubectl config use-context compose --kubeconfig=admin.kubeconfig >/dev/null
  touch ready
fi

exec kube-apiserver \
  --etcd-servers="$ETCD_URL" \
  --bind-address=0.0.0.0 \
  --secure-port=6443 \
  --advertise-address="$API_ADDRESS" \
  --cert-dir="$P" \
  --tls-cert-file="$P/apiserver.crt" \
  --tls-private-key-file="$P/apiserver.key" \
  --client-ca-file="$P/ca.crt" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc \
  --api-audiences=https://kubernetes.default.svc \
  --service-account-key-file="$P/sa.pub" \
  --service-account-signing-key-file="$P/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --profiling=false \
  --v=1
