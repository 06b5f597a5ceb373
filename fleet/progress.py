"""What the runner says while it sends a file, and how a view reads it back.

Every other progress message is one event, said once. A large push is the exception: it lasts
long enough to need a running count, so its messages come at each whole percent, and this
module is the one place that writes and reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

# Smaller files go in a blink: a running count of them would only be noise.
LARGE_BYTES = 1 << 20

SENDING = re.compile(r"push (?P<name>\S+) (?P<percent>\d+)% of (?P<mb>\d+\.\d) MB")


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def sending(
    progress: Callable[[str, str], None], device: str, local: Path
) -> Callable[[int, int], None]:
    """The callback for `Transport.put(..., sent=)`: a message at each whole percent of a
    large file (SFTP calls it every 32 KB; a 500 MB model would say 16,000 things)."""
    said = -1

    def sent(done: int, total: int) -> None:
        nonlocal said
        percent = done * 100 // total if total else 100
        if total >= LARGE_BYTES and percent > said:
            said = percent
            progress(device, f"push {local.name} {percent}% of {megabytes(total)}")

    return sent
