"""Cluster views: the queue overview, usage over time, and readiness.

Invariants:
- Read-only: nothing here writes.
- Queue: any signed-in principal. Center admins see every org by name; anyone else sees
  their own org by name and every other org folded into one anonymous group per accelerator
  type (org None), so no other org's name, job or count is disclosed. Pending jobs are
  grouped by the types they accept ("a|b", in their order of preference), active jobs
  (holding devices: STARTING, RUNNING, CANCELLING, PREEMPTING) by the type they run on.
  Devices count fractional shares as fractions. The median estimated wait is over the
  pending jobs that have an estimated start, never below zero. The jobs are read in one
  query; their number is bounded by what the scheduler loads each cycle.
- Usage: center admins see every org; members and org admins only their own org (grouped by
  org, pool or type all the same); anyone without an org (agents) is refused. A run counts
  in the bucket of its settlement time (`settled_at`), as in statements, so a day's cost
  summed over its hours, or a month's over its days, is what the statement shows. Buckets
  are the calendar hours or days of the billing time zone; the first and last are cut to the
  window [from, to). Windows are at most `MAX_WINDOW[step]` long, so the answer is bounded
  by groups × buckets and the SQL by groups × quarter hours.
- Readiness: ready when the database answers and the scheduler lease was renewed within the
  timeout; otherwise the failing checks say why.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError

from scheduler.types import JobStatus
from suanli.db.engine import Database
from suanli.db.store import cluster as cluster_store
from suanli.errors import forbidden, invalid
from suanli.identity import Principal

# ---------------------------------------------------------------------------- queue


@dataclass(frozen=True)
class PendingGroup:
    org: str | None  # None: other orgs, folded together
    accelerator_types: str  # the types the jobs accept, "a|b"
    jobs: int
    devices: float
    oldest_submitted_at: datetime
    oldest_wait_s: float
    estimated_jobs: int  # how many have an estimated start
    median_estimated_wait_s: float | None


@dataclass(frozen=True)
class ActiveGroup:
    org: str | None
    accelerator_type: str
    jobs: int
    devices: float


@dataclass(frozen=True)
class QueueOverview:
    as_of: datetime
    pending: tuple[PendingGroup, ...]
    running: tuple[ActiveGroup, ...]

    @property
    def pending_jobs(self) -> int:
        return sum(g.jobs for g in self.pending)

    @property
    def running_jobs(self) -> int:
        return sum(g.jobs for g in self.running)


def _org_order(org: str | None) -> tuple[bool, str]:
    return (org is None, org or "")


def queue(db: Database, who: Principal, now: datetime) -> QueueOverview:
    with db.begin() as s:
        rows = cluster_store.queue_rows(s)
    pending: dict[tuple[str | None, str], list[tuple[int, datetime, datetime | None]]] = defaultdict(list)
    active: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    for status, org_id, org, types, ran_on, nodes, per_node, milli, submitted, estimate in rows:
        name = org if who.can_see_org(org_id) else None
        devices_milli = nodes * per_node * milli
        if status == str(JobStatus.PENDING):
            pending[(name, "|".join(types or []))].append((devices_milli, submitted, estimate))
        else:
            active[(name, ran_on or "|".join(types or []))].append(devices_milli)
    groups = []
    for (org, types), jobs in sorted(pending.items(), key=lambda kv: (_org_order(kv[0][0]), kv[0][1])):
        oldest = min(j[1] for j in jobs)
        waits = [max(0.0, (e - now).total_seconds()) for _, _, e in jobs if e is not None]
        groups.append(PendingGroup(
            org, types, len(jobs), sum(j[0] for j in jobs) / 1000, oldest, round(max(0.0, (now - oldest).total_seconds()), 3),
            len(waits), round(statistics.median(waits), 3) if waits else None))
    running = [ActiveGroup(org, t, len(ms), sum(ms) / 1000)
               for (org, t), ms in sorted(active.items(), key=lambda kv: (_org_order(kv[0][0]), kv[0][1]))]
    return QueueOverview(now, tuple(groups), tuple(running))


# ---------------------------------------------------------------------------- usage


class GroupBy(StrEnum):
    ORG = "org"
    POOL = "pool"
    TYPE = "type"


class Step(StrEnum):
    HOUR = "hour"
    DAY = "day"


MAX_WINDOW = {Step.HOUR: timedelta(days=31), Step.DAY: timedelta(days=366)}
DEFAULT_WINDOW = {Step.HOUR: timedelta(days=1), Step.DAY: timedelta(days=30)}
MS_MILLI_PER_DEVICE_HOUR = 1000 * 3_600_000  # devices_milli × duration_ms of one device-hour
# Times outside these are refused: no run was settled before, and far dates overflow datetime.
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class UsagePoint:
    start: datetime  # in the billing time zone
    end: datetime
    group: str
    runs: int
    device_hours: float
    cost_fen: int


@dataclass(frozen=True)
class UsageTotal:
    group: str
    runs: int
    device_hours: float
    cost_fen: int


@dataclass(frozen=True)
class UsageReport:
    group_by: str
    step: str
    timezone: str
    start: datetime
    end: datetime
    points: tuple[UsagePoint, ...]  # buckets with runs only, by start then group
    totals: tuple[UsageTotal, ...]  # per group, by group


def bucket_bounds(start: datetime, end: datetime, tz: ZoneInfo, step: Step) -> list[datetime]:
    """[start, local boundaries strictly inside, end]: the calendar hours or days of `tz`
    (days by wall clock, so a day with a DST change is 23 or 25 hours)."""
    local = start.astimezone(tz)
    if step is Step.DAY:
        first = datetime(local.year, local.month, local.day, tzinfo=tz)
        bounds, day = [start], first
        while True:
            day = (day.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
            if day >= end:
                break
            bounds.append(day)
    else:
        hour = local.replace(minute=0, second=0, microsecond=0)
        bounds, t = [start], hour
        while True:
            t = (t.astimezone(ZoneInfo("UTC")) + timedelta(hours=1)).astimezone(tz)
            if t >= end:
                break
            bounds.append(t)
    bounds.append(end)
    return bounds


def usage(db: Database, who: Principal, tz_name: str, group_by: str, start: datetime | None, end: datetime | None,
          step: str, now: datetime) -> UsageReport:
    """Runs, device-hours and cost per bucket and group, for the window [start, end)."""
    if group_by not in set(GroupBy):
        raise invalid("bad_group_by", f"group_by is one of {', '.join(GroupBy)}, not {group_by!r}", "group_by")
    if step not in set(Step):
        raise invalid("bad_step", f"step is one of {', '.join(Step)}, not {step!r}", "step")
    st = Step(step)
    for name, t in (("from", start), ("to", end)):
        if t is not None and t.tzinfo is None:
            raise invalid("naive_time", f"give {name} with a time zone (e.g. 2026-07-01T00:00:00+08:00)", name)
        if t is not None and not EARLIEST <= t < LATEST:
            raise invalid("time_out_of_range", f"{name} must be from {EARLIEST.year} to {LATEST.year - 1}", name)
    end = end or now
    start = start or end - DEFAULT_WINDOW[st]
    if start >= end:
        raise invalid("bad_window", f"from ({start.isoformat()}) must be before to ({end.isoformat()})", "from")
    if end - start > MAX_WINDOW[st]:
        raise invalid("window_too_long", f"a window by {st} is at most {MAX_WINDOW[st].days} days; ask for a shorter one "
                      f"or a coarser step", "from")
    if not who.sees_all_orgs and who.org_id is None:
        raise forbidden("usage is shown to members of an org and to center admins")
    tz = ZoneInfo(tz_name)
    with db.begin() as s:
        slices = cluster_store.usage_slices(s, group_by, None if who.sees_all_orgs else who.org_id, start, end)
    bounds = bucket_bounds(start, end, tz, st)
    edges = [b.timestamp() for b in bounds]
    sums: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for group, sl, runs, dev, cost in slices:
        # A slice starts at or after the window's first local boundary, so at most it falls
        # in the first bucket; within the window it lies in exactly one bucket.
        i = min(max(bisect_right(edges, sl * cluster_store.SLICE_S) - 1, 0), len(bounds) - 2)
        acc = sums[(i, group)]
        acc[0] += runs
        acc[1] += dev
        acc[2] += cost
    points = tuple(
        UsagePoint(bounds[i].astimezone(tz), bounds[i + 1].astimezone(tz), g, a[0], _hours(a[1]), a[2])
        for (i, g), a in sorted(sums.items()))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (_, g), a in sums.items():
        for k in range(3):
            totals[g][k] += a[k]
    return UsageReport(str(group_by), str(st), tz_name, start.astimezone(tz), end.astimezone(tz), points,
                       tuple(UsageTotal(g, a[0], _hours(a[1]), a[2]) for g, a in sorted(totals.items())))


def _hours(device_ms_milli: int) -> float:
    return round(device_ms_milli / MS_MILLI_PER_DEVICE_HOUR, 6)


# ---------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class Check:
    name: str  # database, scheduler_lease
    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]
    holder: str | None
    renewed_at: datetime | None

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks)


def readiness(db: Database, now: datetime, lease_timeout_s: float) -> Readiness:
    """Is this center able to take and run work: the database answers (one read of the
    lease row) and the scheduler renewed its lease within `lease_timeout_s`."""
    try:
        with db.begin() as s:
            lease = cluster_store.get_lease(s)
            holder, renewed = (lease.holder, lease.renewed_at) if lease else (None, None)
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
        return Readiness((Check("database", False, f"the database cannot be read: {reason}"),
                          Check("scheduler_lease", False, "not checked: no database")), None, None)
    db_ok = Check("database", True, "ok")
    if renewed is None:
        return Readiness((db_ok, Check("scheduler_lease", False, "no scheduler has renewed its lease yet; "
                                       "is `suanli scheduler` running?")), None, None)
    age = (now - renewed).total_seconds()
    if renewed.year < 2000:  # `release_lease` sets the epoch: the last leader stopped cleanly
        return Readiness((db_ok, Check("scheduler_lease", False, f"the scheduler ({holder}) stopped and released its "
                                       "lease; no scheduler is leading")), holder, renewed)
    if age > lease_timeout_s:
        return Readiness((db_ok, Check("scheduler_lease", False, f"the scheduler lease was renewed {age:.0f}s ago by {holder} "
                                       f"(at most {lease_timeout_s:g}s)")), holder, renewed)
    return Readiness((db_ok, Check("scheduler_lease", True, f"renewed {max(age, 0.0):.1f}s ago by {holder}")), holder, renewed)
