"""What a run came to: its records, the devices that failed, and its exit code."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.errors import FleetError
from fleet.results.record import ERRORS, FINDINGS, Record
from fleet.transport import Process


@dataclass
class RunOutcome:
    run_id: str
    records: list[Record] = field(default_factory=list)
    # The devices that failed, each with its exception (kind, device and message).
    device_errors: dict[str, FleetError] = field(default_factory=dict)
    running: list[Process] = field(default_factory=list, repr=False)  # agents at work now
    stopped: int | None = None  # the exit code of a run stopped by a signal (130, 143)

    @property
    def results(self) -> list[Record]:
        return [r for r in self.records if r.measurement == "result"]

    @property
    def failed(self) -> list[Record]:
        """Results that break the run's promise: findings, errors and broken budgets."""
        return [
            r
            for r in self.results
            if r.status in FINDINGS + ERRORS or r.fields.get("passed") is False
        ]

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return self.stopped
        statuses = {r.status for r in self.results}
        # Nothing measured at all (every case skipped) is no pass: the devices lack runtimes.
        nothing_ran = statuses == {"skipped"}
        if self.device_errors or statuses & set(ERRORS) or nothing_ran:
            return 2
        if self.failed:
            return 1
        return 0
