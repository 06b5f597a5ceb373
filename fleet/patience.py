"""How hard a run tries a device before it calls it failed (`fleet run --retries/--wait`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Patience:
    """How hard a run tries a device before it calls it failed."""

    # Transport failures before any case started (refused, reset, no answer, rebooting) are
    # tried again this many times, after 1, 2, 4 ... s; a measurement never is.
    retries: int = 3
    # A device another run holds is waited for this long, asked every BUSY_POLL_S.
    wait_s: float = 600.0


DEFAULT_PATIENCE = Patience()
# Device errors worth another try: the next attempt may well get through.
RETRIED = ("unreachable", "connection_lost", "timeout")
BUSY_POLL_S = 5.0
