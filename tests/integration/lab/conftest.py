"""Lab integration tests: the lab's pytest fixtures, and helpers to run socket tools in hosts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from wirekube_lab.lab import Lab

HERE = Path(__file__).resolve().parent
UDPTOOL = str(HERE / "udptool.py")
NAT_KINDS_TOPOLOGY = HERE / "nat-kinds.yaml"


def tool(lab: Lab, host: str, *args: object, timeout: float = 20) -> dict[str, Any]:
    """Run udptool.py in a host and return its JSON answer."""
    proc = lab.exec(host, [sys.executable, UDPTOOL, *map(str, args)], timeout=timeout)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
