"""What a run's progress says, gathered per device for the live view: each device's state,
the conversions before them, and how many devices are done.

The runner says one line per event (`fleet/runner.py`: "connecting", "push F (2.1 MB)", "C
started", "C p50 0.015 ms pass", "ERROR kind: ...", "done"); this module reads those lines
back, so that the plain log and the live view tell one story. A line it does not know is
shown as it is, never dropped.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from fleet.plan import Plan
from fleet.progress import SENDING

CONTROLLER = "controller"  # the runner's name for what happens before any device

_RUNNING = re.compile(r"running (\d+) case\(s\)")
_PUSH = re.compile(r"push (\S+) \((\d+\.\d MB)\)")
_RETRY = re.compile(r".*; (retry \d+ of \d+) in \S+ s")
_BUSY = re.compile(r".*; (waited \S+ of \S+ s) \(--wait\)")
_ERROR = re.compile(r"ERROR (\w+)")  # its kind; the reason comes after the table
_ARTIFACT = re.compile(r"artifact (\S+ \S+)")
# After a case id: its result ("p50 0.015 ms pass (noisy): why") or its error ("timeout: ...").
_RESULT = re.compile(r"p50 \S+ ms ([^:]+)")
_CASE_ERROR = re.compile(r"(\w+): ")
_REPETITION = re.compile(r"repetition (\d+/\d+)")

ACTIVE = ("connecting", "pushing", "running", "retrying", "busy")
STATES = ("waiting", *ACTIVE, "done", "error", "converting", "preparing")  # rows' and controller's
_HASHED = re.compile(r"([0-9a-f]{12})[0-9a-f]{52}(\.\w+)?")  # an artifact, named by its sha256


class Noted(NamedTuple):
    line: bool  # an event of its own
    changed: bool  # news a view draws at once: a new state, file, case or verdict


@dataclass
class Row:
    """One device as the view shows it: its state, a bar when something is counted."""

    name: str
    cases: tuple[str, ...]  # the ids of the cases planned for it
    state: str = "waiting"  # waiting, connecting, pushing, running, retrying, busy, done, error
    detail: str = ""
    fraction: float | None = None  # the bar: a push's bytes, then the cases finished
    tenths: int = 0  # of the push at hand, said in a plain log
    given: int = 0  # cases the agent was given (refused ones are not)
    started: int = 0
    finished: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)  # the table's words, counted

    def tally(self) -> str:
        """The verdicts so far, as the results table will word them: "2 pass, 1 FAIL"."""
        return ", ".join(f"{n} {words}" for words, n in sorted(self.verdicts.items()))


class Board:
    """Every device of a plan and the conversions before them; fed each progress line from
    the device threads, read by the view's refresh thread."""

    def __init__(self, plan: Plan) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.conversions = len(plan.conversions())
        self.converted = 0  # conversions begun
        self.left_out: Counter[str] = Counter()  # variants refused or failed, by which
        self.controller = Row(CONTROLLER, (), detail=f"{self.conversions} conversion(s) to check")
        self.rows = {
            dp.device.name: Row(dp.device.name, tuple(c.id for c in dp.cases))
            for dp in plan.devices
        }

    def note(self, device: str, message: str) -> Noted:
        """Take one progress line: whether it is an event of its own (worth a line in a plain
        log: not a push's running count between its tenths) and whether a state changed."""
        with self.lock:
            row = self.rows.get(device)
            if row is None:
                return Noted(line=self._controller(message), changed=True)
            self._controller_done()
            return _device(row, message)

    def _controller(self, message: str) -> bool:
        row = self.controller
        if found := _ARTIFACT.match(message):
            self.converted += 1
            row.state, row.fraction = "converting", (self.converted - 1) / self.conversions
            row.detail = f"{self.converted} of {self.conversions}: {found[1]}"
        elif message.startswith(("refused ", "failed ")):
            self.left_out[message.partition(" ")[0]] += 1
        else:  # the converter environment's steps, and anything new
            row.state, row.detail = "preparing", message
        return True

    def _controller_done(self) -> None:
        """A device at work: every conversion is behind (they all come first)."""
        row = self.controller
        if row.state != "done":
            left_out = "".join(f", {n} {why}" for why, n in sorted(self.left_out.items()))
            row.state, row.fraction = "done", 1.0 if self.conversions else None
            row.detail = f"{self.conversions} conversion(s){left_out}"

    def summary(self) -> str:
        """The overall count: "12 of 30 devices done (1 with an error), 8 at work, 3:05"."""
        states = Counter(row.state for row in self.rows.values())
        done = states["done"] + states["error"]
        parts = [f"{done} of {len(self.rows)} devices done"]
        if states["error"]:
            parts[0] += f" ({states['error']} with an error)"
        at_work = sum(states[state] for state in ACTIVE)
        if at_work:
            parts.append(f"{at_work} at work")
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        parts.append(f"{minutes}:{seconds:02d}")
        return ", ".join(parts)


def _device(row: Row, message: str) -> Noted:
    """Update a device's row from one line of its progress."""
    sent = SENDING.fullmatch(message)
    if sent:
        percent = int(sent["percent"])
        row.fraction = percent / 100
        row.detail = f"{_short(sent['name'])} {percent}% of {sent['mb']} MB"
        line = percent // 10 > row.tenths  # a plain log says each tenth the push passes
        row.tenths = max(row.tenths, percent // 10)
        return Noted(line, changed=False)
    case, _, rest = message.partition(" ")
    if case in row.cases:
        return Noted(line=True, changed=_case(row, case, rest))
    if message == "connecting":
        row.state, row.detail, row.fraction = "connecting", "", None
    elif message == "done":
        row.state, row.detail = "done", row.tally() or "nothing to run"
    elif found := _RUNNING.fullmatch(message):
        row.given = int(found[1])
        row.state, row.detail = "running", f"{row.given} case(s)"
    elif found := _PUSH.fullmatch(message):
        row.state, row.detail, row.fraction = "pushing", f"{_short(found[1])} ({found[2]})", 0.0
        row.tenths = 0
    elif found := _ERROR.match(message):
        tally = row.tally()
        row.state, row.detail = "error", found[1] + (f"; {tally}" if tally else "")
    elif found := _RETRY.match(message) or _BUSY.match(message):
        row.state = "retrying" if found.re is _RETRY else "busy"
        row.detail = found[1]
    else:
        row.detail = message
        return Noted(line=True, changed=False)
    return Noted(line=True, changed=True)


def _short(name: str) -> str:
    """A file's name as a row shows it: an artifact's 64-digit hash cut to 12, as git does."""
    found = _HASHED.fullmatch(name)
    return f"{found[1]}…{found[2] or ''}" if found else name


def _case(row: Row, case: str, rest: str) -> bool:
    """Update a row from one event of a case; True when it started or ended."""
    position = f"case {row.started} of {row.given}: {case}"
    if rest == "started":
        row.started += 1
        row.state, row.fraction = "running", row.finished / max(row.given, 1)
        row.detail = f"case {row.started} of {row.given}: {case}"
    elif found := _REPETITION.match(rest):
        row.detail = f"{position} repetition {found[1]}"
        return False
    elif found := _RESULT.match(rest) or _CASE_ERROR.match(rest):
        # A result says the table's words; an error its kind, which the table writes upper.
        words = found[1] if found.re is _RESULT else found[1].upper()
        row.finished += 1
        row.verdicts[words] += 1
        row.fraction = row.finished / max(row.given, 1)
        row.detail = f"{position}: {words}"
    else:
        row.detail = f"{case} {rest}"
        return False
    return True
