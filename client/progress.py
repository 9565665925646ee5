# A progress bar for transfers on a terminal: bytes done, percent, speed and ETA on one
# line, redrawn at most every MIN_INTERVAL seconds. Invariants: thread-safe (parallel
# download workers add to one bar); writes nothing when disabled (not a terminal, --quiet);
# speed is a moving average over the last WINDOW seconds, ETA = remaining / speed.
from __future__ import annotations

import threading
import time
from collections import deque
from typing import TextIO

MIN_INTERVAL = 0.2
WINDOW = 5.0
WIDTH = 28


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_time(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, label: str, total: int | None, stream: TextIO | None,
                 clock=time.monotonic) -> None:
        self.label = label
        self.total = total
        self.stream = stream            # None: silent
        self.done = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque()
        self._started = clock()
        self._drawn = 0.0

    def start_at(self, done: int) -> None:
        """A resumed transfer: `done` bytes were there before (not counted in the speed)."""
        with self._lock:
            self.done = done
            self._samples.clear()
            self._samples.append((self._clock(), done))

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = self._clock()
            self._samples.append((now, self.done))
            while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW:
                self._samples.popleft()
            if self.stream is not None and now - self._drawn >= MIN_INTERVAL:
                self._drawn = now
                self._draw(final=False)

    def speed(self) -> float:
        """Bytes per second over the recent window."""
        if len(self._samples) < 2:
            elapsed = self._clock() - self._started
            return self.done / elapsed if elapsed > 0 else 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self) -> str:
        speed = self.speed()
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * WIDTH) + "-" * (WIDTH - int(frac * WIDTH))
            eta = (self.total - self.done) / speed if speed > 0 else float("inf")
            return (f"{self.label} [{bar}] {frac * 100:5.1f}% {human_bytes(self.done)}/"
                    f"{human_bytes(self.total)} {human_bytes(speed)}/s ETA {human_time(eta)}")
        return f"{self.label} {human_bytes(self.done)} {human_bytes(speed)}/s"

    def _draw(self, final: bool) -> None:
        self.stream.write("\r" + self.line() + ("\n" if final else ""))
        self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            if self.stream is not None:
                self._draw(final=True)
