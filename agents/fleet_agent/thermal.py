"""Temperature and throttling, watched by the agent for the whole of a case.

The agent (not the worker being timed) reads the hottest sensor and the throttling state when
a case starts, once a second while its repetitions run, and when it ends. A read is a few
sysfs files (or one ``vcgencmd`` on a Raspberry Pi), so the watch costs the timed run next
to nothing; on a device with neither, nothing is started at all.
"""

import threading
from typing import Any, Dict, List, Optional, Tuple

from fleet_agent import live

INTERVAL_S = 1.0


class Watch:
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self._temps: List[float] = []
        self._throttled = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        temp, throttled = self._read(True, True)
        self._has_sensor = temp is not None
        self._has_throttle = throttled is not None
        self._thread: Optional[threading.Thread] = None
        if self._has_sensor or self._has_throttle:
            self._thread = threading.Thread(
                target=self._loop, args=(interval_s,), name="thermal-watch", daemon=True
            )
            self._thread.start()

    def _read(self, sensor: bool, throttle: bool) -> Tuple[Optional[float], Optional[bool]]:
        temp = live.temperature_c() if sensor else None
        throttled = live.throttled_now() if throttle else None
        with self._lock:
            if temp is not None:
                self._temps.append(temp)
            self._throttled = self._throttled or bool(throttled)
        return temp, throttled

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._read(self._has_sensor, self._has_throttle)

    def stop(self) -> Dict[str, Any]:
        """Result fields: ``temp_start_c``, ``temp_max_c``, ``temp_end_c`` where the device
        has a sensor; ``throttled`` always (False where the device cannot tell)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._read(self._has_sensor, self._has_throttle)
        fields: Dict[str, Any] = {"throttled": self._throttled}
        if self._temps:
            fields.update(
                temp_start_c=self._temps[0],
                temp_max_c=max(self._temps),
                temp_end_c=self._temps[-1],
            )
        return fields
