"""JSON Lines events: one object per line on stdout, flushed at once."""

import json
import threading
from typing import IO, Any

_lock = threading.Lock()


def emit(out: IO[str], event: str, **body: Any) -> None:
    line = json.dumps(dict(event=event, **body), default=_plain)
    with _lock:
        out.write(line + "\n")
        out.flush()


def _plain(value: Any) -> Any:
    """numpy scalars and other number-likes become plain floats."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
