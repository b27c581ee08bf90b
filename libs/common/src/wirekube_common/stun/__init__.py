"""STUN for WireKube: wire format, client prober, NAT classification.

Layout (one concept per module):

* ``codec``     -- RFC 5389/5780 (and RFC 3489 read-compat) message encode/decode;
                   sans-IO, fuzzed. ``framing`` splits a TCP byte stream into messages.
* ``timers``    -- retransmission constants with the reason for each value.
* ``client``    -- sans-IO transaction engine: handed a ``send`` callable, fed replies.
* ``aio``       -- thin asyncio drivers (an owned UDP socket, or any datagram port).
* ``nat``       -- pure NAT mapping/filtering classification and the report merge rule.
* ``discovery`` -- the probe sequence (RFC 5780 tests) over any async binding callable.
"""
