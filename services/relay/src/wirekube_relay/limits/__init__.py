"""What one client or source address can make the relay spend: the bounds with
their reasons (``bounds``), per-source accounting and token buckets
(``sources``, pure), and rate-limited refusal logs (``refusals``)."""
