"""WireKubeGateways: per-peer health verdicts (``health``), the active peer
(``failover``), the status (``status``), one pass's decision over all of them
(``decide``, pure) and the loop that observes and writes (``reconciler``)."""
