"""The replica mesh (docs/relay-mesh.md): the replica-link wire format and join
handshake (``proto``, sans-IO), who holds which key (``presence``, pure), one
link to another replica (``link``), and discovery, links and routing
(``pool``)."""
