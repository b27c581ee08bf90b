"""Data plane: the desired WireGuard device, routes and rules, the diff against the kernel, and applying it."""
