"""A vendor tool that prints a line every interval until it is stopped (``nvidia-smi -lms``,
``tegrastats --interval``), each line handed to a callback from a reader thread.

The tool starts once, before the model loads, so that the timed phase forks nothing. It stays
in the worker's process group, so that the agent's kill of a worker that ran out of time (or
lost its controller) takes it too.
"""

import subprocess
import threading
from typing import Callable, List

from fleet_agent import live


class ToolStream:
    def __init__(self, argv: List[str], on_line: Callable[[str], None]) -> None:
        """Start ``argv``; OSError where the tool is not installed or cannot start."""
        if live.find_tool(argv[0]) is None:
            raise FileNotFoundError("{} is not installed".format(argv[0]))
        self._proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
        )
        self._on_line = on_line
        self._thread = threading.Thread(target=self._read, name=argv[0], daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None  # for mypy: stdout=PIPE was asked for
        for line in self._proc.stdout:
            self._on_line(line)

    def stop(self) -> None:
        """Kill the tool and wait for the last line it printed to be handled."""
        self._proc.kill()
        self._proc.wait()
        self._thread.join()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
