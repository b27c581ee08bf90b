"""The one door to the Kubernetes API shared by the services: plain JSON over
the kubernetes package's transport (``rest``), list+watch caches (``watch``)
and client construction (``connect``). Nothing else in ``wirekube_common``
imports ``kubernetes``."""
