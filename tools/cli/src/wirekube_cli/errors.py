"""Exit codes scripts can rely on, and the one error type that carries them.

=====  =====================================================================
code   meaning
=====  =====================================================================
0      success; ``doctor``: no problems; ``why``: the pair has a working path
1      ``doctor`` found problems; ``why``: the pair has no working path
2      usage error (bad flag, unknown output format)
3      no usable kubeconfig (none found, unreadable, unknown context)
4      the API server could not be reached or refused the request
5      the WireKube CRDs are not installed
6      an unknown node (``why``, ``doctor NODE``)
7      a relay's admin API could not be reached (``relays``)
=====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_NO_CONFIG = 3
EXIT_API = 4
EXIT_CRDS_MISSING = 5
EXIT_UNKNOWN_NODE = 6
EXIT_RELAY_ADMIN = 7


class CliError(Exception):
    """A failure to tell the user in one line, with the exit code to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
