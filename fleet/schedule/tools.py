"""The system tools a schedule runs (systemd-analyze, systemctl): output captured, a time
limit, and the exit status left to the caller."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

TOOL_TIMEOUT_S = 30


def run_tool(
    argv: Sequence[str], cwd: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )
