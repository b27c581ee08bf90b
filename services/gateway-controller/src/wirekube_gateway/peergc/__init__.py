"""Peer garbage collection: which WireKubePeers belong to nodes that left the
mesh and are due for deletion (``departed``, pure), and the loop that
deletes them while leading (``collector``)."""
