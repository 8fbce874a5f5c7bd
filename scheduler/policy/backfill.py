"""EASY backfill: reservations for blocked jobs, and estimated start times.

- The timeline of an accelerator type is the list of (end, server, whole devices) of every
  job holding devices there — running jobs at their time limit (or stop deadline if being
  stopped) and the jobs started earlier in this decision at now + time limit. Jobs are
  assumed to run to their limits (the policy never knows true durations).
- A **reservation** for a blocked job is the earliest time `at` when `nodes` servers have
  `devices_per_node` free, walking the timeline in order, and the servers chosen then (best
  fit). Its `slack` per server is what may still be taken there by jobs that run past `at`.
- A later job may start now only if it ends by `at`, or takes no more than the slack on
  each reserved server it uses (`veto`). So backfilling never delays a reservation, given
  the time limits.
- An **estimate** for other blocked jobs is the earliest time the type's total free
  devices cover the demand of every blocked job ahead of it plus its own (aggregate,
  ignoring server boundaries): a cheap guide shown to users, not a promise.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from scheduler.policy.capacity import TypeCapacity
from scheduler.types import Placement, Resources


@dataclass
class Reservation:
    job_id: int
    type: str
    at: float
    slack: dict[str, int]  # server -> devices still takeable by jobs running past `at`

    def refuses(self, node: str, devices: int, ends_at: float) -> bool:
        return ends_at > self.at and node in self.slack and self.slack[node] < devices

    def consume(self, placements: tuple[Placement, ...], ends_at: float, whole: bool) -> None:
        if ends_at <= self.at or not whole:
            return
        for p in placements:
            if p.node in self.slack:
                self.slack[p.node] -= len(p.devices)

    def describe(self) -> str:
        return ", ".join(f"{n}" for n in sorted(self.slack))


@dataclass
class Timeline:
    """Device releases of one type, sorted by time."""

    events: list[tuple[float, str, int]] = field(default_factory=list)

    def add(self, end: float, node: str, devices: int) -> None:
        if devices:
            bisect.insort(self.events, (end, node, devices))

    def reserve(self, job_id: int, r: Resources, cap: TypeCapacity, now: float) -> Reservation | None:
        """The earliest reservation for `r` on this type, or None if the known releases never
        make room (e.g. servers too small, or all capacity held by jobs of unknown end)."""
        need = 1 if r.fractional else r.devices_per_node
        free = {name: len(n.free) for name, n in cap.nodes.items()}
        eligible = {name for name, k in free.items() if k >= need}
        at = now
        if len(eligible) < r.nodes:
            for end, node, k in self.events:
                if node not in free:
                    continue
                free[node] += k
                if free[node] >= need and node not in eligible:
                    eligible.add(node)
                    if len(eligible) >= r.nodes:
                        at = end
                        break
            else:
                return None
        chosen = sorted(eligible, key=lambda n: (free[n], n))[: r.nodes]
        return Reservation(job_id, cap.type, max(at, now), {n: free[n] - need for n in chosen})


@dataclass
class Estimator:
    """Aggregate estimates of start times for blocked jobs of one type."""

    free_now: int
    releases: list[tuple[float, int]]  # (time, devices), sorted
    ahead: int = 0  # devices wanted by the blocked jobs already estimated
    count: int = 0  # how many estimates were given
    _cum: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        total = self.free_now
        for _, k in self.releases:
            total += k
            self._cum.append(total)

    def peek(self, devices: int, now: float) -> float | None:
        """The estimate `estimate` would give, without counting the job as ahead of others."""
        want = self.ahead + devices
        if self.free_now >= want:
            return now
        i = bisect.bisect_left(self._cum, want)
        return self.releases[i][0] if i < len(self.releases) else None

    def estimate(self, devices: int, now: float) -> float | None:
        """The job's estimate; later jobs are estimated behind it."""
        at = self.peek(devices, now)
        self.ahead += devices
        self.count += 1
        return at
