"""A wall clock for a benchmark's runs that leaves out the time the process was stopped.

On 2 cores a long benchmark is paused (``kill -STOP`` / ``kill -CONT``) while something that
must be timed on a quiet machine runs; without this, the run in progress would report the pause
as its own seconds. A daemon thread wakes every ``TICK_S``; a wake-up that comes more than
``GAP_S`` late means the process was not running (a loaded machine delays a sleeping thread by
milliseconds, not seconds), and that gap is counted as paused.
"""

from __future__ import annotations

import threading
import time

TICK_S = 0.5
GAP_S = 5.0


class RunClock:
    """``seconds_since(t0)``: wall seconds since ``t0`` (a ``time.perf_counter()`` reading), less
    the stretches the process was stopped."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pauses = []  # (start, end) perf_counter readings of each stop
        threading.Thread(target=self._watch, daemon=True, name="run-clock").start()

    def _watch(self) -> None:
        last = time.perf_counter()
        while True:
            time.sleep(TICK_S)
            now = time.perf_counter()
            if now - last > GAP_S:
                with self._lock:
                    self._pauses.append((last + TICK_S, now))
            last = now

    def paused_since(self, t0: float) -> float:
        with self._lock:
            return sum(end - max(start, t0) for start, end in self._pauses if end > t0)

    def seconds_since(self, t0: float) -> float:
        return time.perf_counter() - t0 - self.paused_since(t0)
