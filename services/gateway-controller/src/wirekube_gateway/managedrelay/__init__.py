"""The managed relay: WireKubeMesh ``spec.relay.managed`` → the relay's objects.

A second reconciler in the gateway controller's process, leader-elected on
the same Lease. ``desired`` (pure) builds the Deployment, Services,
PodDisruptionBudget and mesh Secret from the mesh; ``plan`` (pure) diffs them
against the cluster; ``status`` (pure) says in the mesh's ``status.relay``
where agents find the relay and why; ``kube`` talks to the API server;
``reconciler`` runs the loop. docs/managed-relay.md is the user's view.
"""
