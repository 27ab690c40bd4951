"""Rolling counters, rates and latencies for /diagnostics (thread-safe; time in time.monotonic seconds)."""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from maskclip_ros.ros.interface import COUNTERS, RATES, latency_key


class RollingStats:
    """Event counts (totals), event rates and latency samples over the last `window` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._totals: dict[str, int] = defaultdict(int)
        self._events: dict[str, deque] = defaultdict(deque)    # name -> (time, 1.0)
        self._samples: dict[str, deque] = defaultdict(deque)   # stage -> (time, milliseconds)

    def count(self, name: str, now: float | None = None) -> None:
        """One event `name` (e.g. "received", "published", "dropped", "bad")."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._totals[name] += 1
            self._events[name].append((now, 1.0))
            self._prune(self._events[name], now)

    def latency(self, stage: str, milliseconds: float, now: float | None = None) -> None:
        """One latency sample of `stage` (e.g. "clip", "publish", "total")."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples[stage].append((now, float(milliseconds)))
            self._prune(self._samples[stage], now)

    def total(self, name: str) -> int:
        with self._lock:
            return self._totals[name]

    def rate(self, name: str, now: float | None = None) -> float:
        """Events per second of `name` over the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            events = self._events[name]
            self._prune(events, now)
            return len(events) / self.window

    def latencies(self, now: float | None = None) -> dict[str, tuple[float, float]]:
        """stage -> (mean, max) milliseconds over the window (stages without samples are left out)."""
        now = time.monotonic() if now is None else now
        out = {}
        with self._lock:
            for stage, samples in self._samples.items():
                self._prune(samples, now)
                if samples:
                    values = np.array([ms for _, ms in samples])
                    out[stage] = (float(values.mean()), float(values.max()))
        return out

    def _prune(self, items: deque, now: float) -> None:
        while items and now - items[0][0] > self.window:
            items.popleft()


def diagnostic_array(stats: RollingStats, *, name: str, hardware_id: str, stamp, info: dict[str, str],
                     problem: str = "") -> DiagnosticArray:
    """One DiagnosticStatus with rates (Hz), totals, latencies (ms: mean and max per stage) and `info`.

    problem: "" = OK, else the WARN message."""
    values = {key: f"{stats.rate(event):.2f}" for key, event in RATES.items()}
    values.update({key: str(stats.total(event)) for key, event in COUNTERS.items()})
    for stage, (mean, worst) in sorted(stats.latencies().items()):
        values[latency_key(stage)] = f"{mean:.1f}"
        values[latency_key(stage, worst=True)] = f"{worst:.1f}"
    values.update(info)
    status = DiagnosticStatus(level=DiagnosticStatus.WARN if problem else DiagnosticStatus.OK, name=name,
                              message=problem or "ok", hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
