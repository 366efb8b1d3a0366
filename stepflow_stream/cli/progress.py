"""The one-line progress bar of batches: done, failed, rate and ETA, redrawn in place."""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Redrawn at most ten times a second on ``stream`` (stderr), and once at the end.

    On a terminal the line is redrawn in place; elsewhere (a log, a pipe) a line is written
    once a second, so that a batch run by a script still shows it is alive.
    """

    def __init__(self, total: int, stream: IO[str] | None = None, *,
                 already_done: int = 0) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.in_place = self.stream.isatty()
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.already_done = already_done
        self.done = 0
        self.failed = 0

    def update(self, done: int, failed: int) -> None:
        self.done, self.failed = done, failed
        now = time.monotonic()
        interval = 0.1 if self.in_place else 1.0
        if now - self.last_draw < interval and done < self.total:
            return
        self.last_draw = now
        self.stream.write(("\r" if self.in_place else "") + self.line(now)
                          + ("" if self.in_place else "\n"))
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        # Items found done when the batch resumed cost nothing: they do not count in the rate.
        rate = max(self.done - self.already_done, 0) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        return (f"[{bar}] {self.done}/{self.total} done, {self.failed} failed, "
                f"{rate:,.0f}/s, ETA {eta:,.0f}s ")

    def close(self) -> None:
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()
