"""The loop's cadence (`scheduler.loop.next_wait`): the next cycle runs at once only after a
cycle that started or ended jobs while others wait; any other cycle waits the interval, so an
idle or blocked queue never spins."""

from __future__ import annotations

import pytest

from scheduler.loop import CycleReport, next_wait


@pytest.mark.parametrize(
    ("report", "wait"),
    [
        (CycleReport(started=[1], waiting=3), 0.0),  # the next in line may fit now
        (CycleReport(finished=[2], waiting=1), 0.0),  # devices just freed for a waiting job
        (CycleReport(started=[1], finished=[2], waiting=0), 0.5),  # nothing waits
        (CycleReport(waiting=5), 0.5),  # blocked queue, nothing changed: no spinning
        (CycleReport(preempted=[3], waiting=2), 0.5),  # a preemption frees devices only when it ends
        (CycleReport(), 0.5),  # idle
    ],
)
def test_next_cycle_at_once_only_after_progress_with_work_waiting(report: CycleReport, wait: float) -> None:
    """Invariant: 0 s after a cycle that started or finished jobs with jobs waiting; the
    configured interval otherwise."""
    assert next_wait(report, 0.5) == wait
