"""Who may register as a client: proof of key possession and the allow-list
(``auth``), its feed from WireKubePeers (``k8s``), and which connection owns
each key (``registry``, pure). The client wire format itself is
``wirekube_common.relayproto``; the TLS port is ``wirekube_relay.tls``."""
