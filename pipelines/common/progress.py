"""Progress of long work in the run logs: done/total, rate and ETA at a steady cadence, then one summary line.

A run that drains thousands of messages or archives a big day is otherwise silent between
its first and last line, and an operator cannot tell slow from stuck. A progress line is
written once both ``every_seconds`` and ``every_items`` have passed since the last one
(whichever comes later), so a small run logs only its summary and a large one does not
flood the logs.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02} min"


class Progress:
    """Counts work done and logs ``what: done/total (pct), rate/s, ETA`` at a steady cadence."""

    def __init__(self, log: Any, what: str, total: int | None = None, *, unit: str = "item",
                 every_seconds: float = 10.0, every_items: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.every_seconds, self.every_items, self.clock = every_seconds, every_items, clock
        self.done = 0
        self.started = self._last_time = clock()
        self._last_done = 0
        self._lock = threading.Lock()  # a watcher thread may update while the work runs

    def add(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.update(self.done + n)

    def update(self, done: int) -> None:
        """``done`` items done so far; logs a progress line when the cadence says so."""
        with self._lock:
            self.done = done
            now = self.clock()
            if now - self._last_time < self.every_seconds or done - self._last_done < self.every_items:
                return
            self._last_time, self._last_done = now, done
            self.log.info(self.line(now))

    def rate(self, now: float | None = None) -> float:
        elapsed = (self.clock() if now is None else now) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        rate = self.rate(now)
        if self.total:
            total = max(self.total, self.done)  # a total read at the start (a queue's depth) may grow
            left = total - self.done
            eta = f", ETA {_duration(left / rate)}" if rate > 0 and left else ""
            return (f"{self.what}: {self.done}/{total} {self.unit}s ({self.done / total:.0%}), "
                    f"{rate:.1f}/s{eta}")
        return f"{self.what}: {self.done} {self.unit}s, {rate:.1f}/s"

    def finish(self, detail: str = "") -> str:
        """Log (and return) the one summary line: how many, how long, how fast, and ``detail``."""
        elapsed = self.clock() - self.started
        of = f"/{self.total}" if self.total is not None else ""
        line = (f"{self.what}: done, {self.done}{of} {self.unit}s in {_duration(elapsed)} "
                f"({self.rate():.1f}/s)" + (f"; {detail}" if detail else ""))
        self.log.info(line)
        return line


@contextmanager
def watched(progress: Progress, count: Callable[[], int], *, poll_seconds: float = 1.0) -> Iterator[Progress]:
    """Update ``progress`` from ``count()`` every ``poll_seconds`` while the block runs.

    For work whose loop lives in code that does not count (a sweep's act function): the
    count is read from what it builds as it goes (its result lists).
    """
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_seconds):
            try:
                progress.update(count())
            except Exception:  # a progress line must never break the work it reports on
                pass

    thread = threading.Thread(target=poll, name=f"progress: {progress.what}", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        try:
            progress.update(count())
        except Exception:
            pass


class _CurrentStderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a line is logged (Dagster captures a step's stderr as its
    compute log; a handler holding the stream it saw at import would write past that capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a log line must never fail the work it describes
            self.handleError(record)


def route_item_logs() -> None:
    """Send the project's per-item lines (the ``pipelines`` loggers, e.g. one per termination message) to
    the run's stderr, which Dagster keeps as the step's compute log, at INFO. The event log carries one
    line per work batch instead: an event per item costs a storage write (issue #15). Idempotent."""
    log = logging.getLogger("pipelines")
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
