"""Handing the node over from an old agent to a new one during a surge
rollout (protocol.py says how and why). Imports nothing heavy: the bridge
worker uses ``wire``."""
