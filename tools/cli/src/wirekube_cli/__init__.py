"""wirekubectl: the WireKube mesh as its operators see it, from the Kubernetes API."""
