"""The one retry policy for talking to the Kubernetes API and relays.

Exponential backoff with full jitter, capped, forever: a node agent must never
give up on the API server (the data plane keeps running on its last
configuration meanwhile), but must not hammer it when it comes back either —
N agents reconnecting at once is the thundering herd the jitter spreads out.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from tenacity import wait_random_exponential

# First retry after up to half a second: a blip (apiserver restart, a dropped
# watch) heals fast. Cap at 30 s: the longest an agent stays blind after the
# API server returns.
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0

api_wait = wait_random_exponential(multiplier=INITIAL_BACKOFF_S, max=MAX_BACKOFF_S)


def backoff_delays(
    initial: float = INITIAL_BACKOFF_S, cap: float = MAX_BACKOFF_S, rng: random.Random | None = None
) -> Iterator[float]:
    """Endless full-jitter delays for loops that manage their own retries (watches)."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, initial * 2**attempt))
        attempt = min(attempt + 1, 32)
