"""WireGuard device configuration shared by the agent's backends and the lab.

``types`` holds the backend-neutral values (what a device is, what to change);
``uapi`` speaks wireguard-go's UAPI socket protocol. The kernel backend lives in
the agent because only the agent may import pyroute2.
"""
