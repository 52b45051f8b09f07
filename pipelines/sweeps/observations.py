"""Two observations and the anomaly gate, as pure functions over a sweep's plan history.

**Two observations.** A target is acted on only when an earlier plan, at least
``confirm_after_minutes`` before, already held it, and every plan since did too (a target
that drops out of one plan starts over). Each plan records, per target, when it was first
seen in that unbroken run of plans: its *mark*. The marks live in the plan asset's
materialization history in Dagster's storage (``<sweep job>_plan``), so they survive a
restart of the code location and cost no AWS call. Losing them (a wiped instance, an
unreadable record) only makes every target a first sighting again: it delays action,
never causes it.

An observation's time is when the plan was made, by this process's clock: never a run tag
or anything else a run could set (a run tagged with an old "scheduled" time would otherwise
confirm a target seen once). A schedule's runs start a few seconds off their ticks, so a
target counts as held for the window when its mark is at least the window less a slack
old: a tenth of the window, at most one minute (14 minutes for the 15-minute default, none
for a window of 0).

**Anomaly gate.** A plan more than ``anomaly_factor`` times larger than the median of the
sweep's recent plans, or holding more than a few targets in a pool that is usually quiet,
is refused before acting, naming the history. Small plans never trip it (``ANOMALY_FLOOR``:
0 → 4 is not an anomaly), and nor does a sweep with too short a history to judge.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

HISTORY = 10  # plans the gate compares with
MIN_HISTORY = 3  # fewer earlier plans than this: too little to call anything abnormal
ANOMALY_FLOOR = 10  # a plan of this many targets or fewer (in all, or in one pool) is never an anomaly
DEFAULT_ANOMALY_FACTOR = 3.0
# The smallest "usual" size the factor multiplies: at the default factor a quiet sweep (median
# 0) may plan up to ANOMALY_FLOOR, and raising the factor for one run raises that too.
_USUAL_FLOOR = ANOMALY_FLOOR / DEFAULT_ANOMALY_FACTOR
MAX_MARKS = 10_000  # marks recorded per plan; beyond, targets are first sightings again (delay only)


@dataclass(frozen=True)
class PlanRecord:
    """What an earlier plan of the same sweep recorded: when, how large, per pool, and its marks."""

    observed_at: datetime
    planned: int
    pools: Mapping[str, int] = field(default_factory=dict)
    marks: Mapping[str, datetime] = field(default_factory=dict)


def carry_marks(targets: Iterable[str], previous: PlanRecord | None, observed_at: datetime) -> dict[str, datetime]:
    """Each target's mark: its mark in the previous plan if that plan held it, else this observation."""
    earlier = previous.marks if previous else {}
    return {t: min(earlier.get(t, observed_at), observed_at) for t in sorted(targets)}


def slack(window_minutes: int) -> timedelta:
    """How much earlier than the full window a run may confirm: a tenth of it, at most a minute."""
    return min(timedelta(minutes=1), timedelta(minutes=window_minutes) / 10)


def confirmed(marks: Mapping[str, datetime], observed_at: datetime, window_minutes: int) -> tuple[set[str], set[str]]:
    """(targets seen at least ``window_minutes`` (less the slack) ago and ever since, first sightings still waiting)."""
    window = timedelta(minutes=window_minutes) - slack(window_minutes)
    ready = {t for t, since in marks.items() if observed_at - since >= window}
    return ready, set(marks) - ready


def pool_counts(pools: Iterable[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pool in pools:
        key = pool or "(no pool)"
        counts[key] = counts.get(key, 0) + 1
    return counts


def anomaly(kind: str, planned: int, pools: Mapping[str, int], history: Sequence[PlanRecord],
            factor: float) -> str | None:
    """Why this plan is abnormal against ``history`` (newest first), or None."""
    if len(history) < MIN_HISTORY or planned <= ANOMALY_FLOOR:
        return None
    recent = history[:HISTORY]
    sizes = [h.planned for h in recent]
    usual = statistics.median(sizes)
    shown = ", ".join(str(s) for s in sizes)
    if planned > factor * max(usual, _USUAL_FLOOR):
        return (f"{kind}: plan has {planned} targets, more than anomaly_factor={factor:g} × the median "
                f"{usual:g} of the last {len(sizes)} plans ({shown}, newest first); nothing was touched. "
                "Review the plan and raise anomaly_factor for one run if it is right.")
    for pool, count in sorted(pools.items()):
        usual_in_pool = statistics.median(h.pools.get(pool, 0) for h in recent)
        if usual_in_pool == 0 and count > ANOMALY_FLOOR and count > factor * _USUAL_FLOOR:
            return (f"{kind}: plan has {count} targets in pool {pool}, which is usually quiet (a median of 0 in "
                    f"the last {len(sizes)} plans: {shown}, newest first); nothing was touched. Review the plan "
                    "and raise anomaly_factor for one run if it is right.")
    return None
