"""Paths: which transport carries each peer's packets, and the probes that prove it."""
