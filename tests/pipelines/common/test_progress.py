"""Progress lines at a steady cadence (both every N seconds and every N items), then one summary line."""

from __future__ import annotations

import time

from pipelines.common.progress import Progress, watched
from pipelines.common.safety import ActResult, PlannedAction


class Log:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_line_only_once_both_the_seconds_and_the_items_have_passed():
    log, clock = Log(), Clock()
    progress = Progress(log, "drain", 1000, unit="message", every_seconds=10, every_items=100, clock=clock)
    clock.now += 30
    progress.add(50)  # 30 s but only 50 items: no line
    assert log.lines == []
    progress.add(50)  # 100 items and 30 s: a line with done/total, rate and ETA
    assert log.lines == ["drain: 100/1000 messages (10%), 3.3/s, ETA 4 min 30 s"]
    progress.add(200)  # 200 more items, but no time has passed: no line
    assert len(log.lines) == 1
    clock.now += 10
    progress.add(0)
    assert log.lines[-1] == "drain: 300/1000 messages (30%), 7.5/s, ETA 1 min 33 s"


def test_the_summary_line_says_how_many_how_long_and_how_fast():
    log, clock = Log(), Clock()
    progress = Progress(log, "archive 2026-11-10", 4000, unit="record", clock=clock)
    clock.now += 3725
    progress.update(4000)
    line = progress.finish("3990 deleted, 10 kept")
    assert line == log.lines[-1] == ("archive 2026-11-10: done, 4000/4000 records in 1 h 02 min (1.1/s); "
                                     "3990 deleted, 10 kept")


def test_without_a_total_a_line_has_no_eta():
    log, clock = Log(), Clock()
    progress = Progress(log, "scan", every_seconds=0, every_items=1, clock=clock)
    clock.now += 2
    progress.add(10)
    assert log.lines == ["scan: 10 items, 5.0/s"]
    assert progress.finish() == "scan: done, 10 items in 2 s (5.0/s)"


def test_watched_reads_how_far_an_act_function_got_from_the_result_it_fills():
    log = Log()
    progress = Progress(log, "sweep: acting", 3, unit="target", every_seconds=0, every_items=1)
    result = ActResult()  # handed to the act function, as the act step does
    with watched(progress, lambda: result.handled, poll_seconds=0.01):
        for n in range(3):
            result.done.append(PlannedAction(f"i-{n}", "why", "terminate"))
            time.sleep(0.05)
    assert progress.done == 3
    assert any(line.startswith("sweep: acting: ") and "/3 targets" in line for line in log.lines), log.lines
