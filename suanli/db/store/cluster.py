"""Store: the scheduler lease, and the reads behind the queue overview and usage over time.

Invariants:
- The lease is one row per name (`scheduler_lease`): holder, renewed_at and a fencing token
  that grows by one at every acquisition. `acquire_lease` and `renew_lease_if` are single
  compare-and-set UPDATEs (an INSERT the very first time: two loops racing on it, one gets
  the `IntegrityError` and tries again next interval); `fence` is one primary-key SELECT,
  `FOR SHARE` on PostgreSQL so that the row cannot change hands before the caller commits
  (SQLite's `BEGIN IMMEDIATE` already serializes every writer).
- Nothing here writes except the lease functions.
- Usage is summed in SQL per (group, 15-minute slice of `settled_at` in UTC), with the same
  statement on SQLite and PostgreSQL but for the slice expression; every time zone in use
  today is offset from UTC by whole quarter hours, so every local hour and day is a whole
  number of slices and the service can sum slices into buckets exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, case, cast, extract, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from scheduler.types import ACTIVE, JobStatus
from suanli.db.models import BillingRunRow, JobRow, OrgRow, PoolRow, SchedulerLeaseRow

LEASE = "scheduler"
SLICE_S = 900  # usage is summed per quarter hour in SQL, then into local hours or days


# ---------------------------------------------------------------------------- scheduler lease


def renew_lease(s: Session, holder: str, now: datetime, name: str = LEASE) -> None:
    """Write the lease unconditionally (tools and tests; the scheduler uses the compare-and-set
    functions below). A new holder gets a new token."""
    L = SchedulerLeaseRow
    res = s.execute(update(L).where(L.name == name)
                    .values(holder=holder, renewed_at=now, token=case((L.holder == holder, L.token), else_=L.token + 1))
                    .execution_options(synchronize_session=False))
    if res.rowcount == 0:
        s.add(SchedulerLeaseRow(name=name, holder=holder, renewed_at=now, token=1))
        s.flush()


def acquire_lease(s: Session, holder: str, now: datetime, timeout_s: float, name: str = LEASE) -> int | None:
    """Take the lease when it is free (no row, or released), expired (renewed more than
    `timeout_s` before `now`) or already `holder`'s (a restarted process under the same
    host:pid name); returns the new fencing token (the old one + 1), or None when another
    live holder has it. On the very first INSERT a racing loop may raise `IntegrityError`."""
    L = SchedulerLeaseRow
    cutoff = now - timedelta(seconds=timeout_s)
    res = s.execute(update(L).where(L.name == name, or_(L.renewed_at < cutoff, L.holder == holder))
                    .values(holder=holder, renewed_at=now, token=L.token + 1)
                    .execution_options(synchronize_session=False))
    if res.rowcount == 1:
        token = s.scalar(select(L.token).where(L.name == name))
        return int(token) if token is not None else None
    if s.scalar(select(L.name).where(L.name == name)) is not None:
        return None  # held by someone else, and fresh
    s.add(SchedulerLeaseRow(name=name, holder=holder, renewed_at=now, token=1))
    s.flush()
    return 1


def renew_lease_if(s: Session, holder: str, token: int, now: datetime, name: str = LEASE) -> bool:
    """Renew the lease only while it is still ours (same holder and token); False: lost."""
    L = SchedulerLeaseRow
    res = s.execute(update(L).where(L.name == name, L.holder == holder, L.token == token)
                    .values(renewed_at=now).execution_options(synchronize_session=False))
    return res.rowcount == 1


def release_lease(s: Session, holder: str, token: int, name: str = LEASE) -> bool:
    """Give the lease up (a clean shutdown) so that another loop takes it at once: its
    renewal time goes back to the epoch; the holder is kept for `/readyz` to name."""
    L = SchedulerLeaseRow
    res = s.execute(update(L).where(L.name == name, L.holder == holder, L.token == token)
                    .values(renewed_at=datetime(1970, 1, 1, tzinfo=UTC)).execution_options(synchronize_session=False))
    return res.rowcount == 1


def fence(s: Session, holder: str, token: int, name: str = LEASE) -> bool:
    """Whether `holder` still holds the lease with `token`, checked as the first statement of
    a transaction: on PostgreSQL the row is share-locked until commit, so a challenger's
    acquiring UPDATE waits for this transaction (and then sees it committed under the old
    term), and a transaction that starts after the acquisition sees the new token."""
    L = SchedulerLeaseRow
    stmt = select(L.holder, L.token).where(L.name == name)
    if s.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    row = s.execute(stmt).first()
    return row is not None and row[0] == holder and row[1] == token


def get_lease(s: Session, name: str = LEASE) -> SchedulerLeaseRow | None:
    return s.get(SchedulerLeaseRow, name)


# ---------------------------------------------------------------------------- queue


def queue_rows(s: Session) -> list[Any]:
    """Pending and active jobs (active: holding devices) with their org's name: status, org id,
    org name, accepted types, type run on, nodes, devices per node, share of a device
    (thousandths), submit time, estimated start. One row per job; pending and active jobs
    are what the scheduler loads every cycle, so the count is bounded by the same."""
    statuses = [str(JobStatus.PENDING), *(str(x) for x in ACTIVE)]
    return list(s.execute(
        select(JobRow.status, JobRow.org_id, OrgRow.name, JobRow.accelerator_types, JobRow.accelerator_type,
               JobRow.node_count, JobRow.devices_per_node, JobRow.device_milli, JobRow.submitted_at,
               JobRow.estimated_start_at)
        .join(OrgRow, OrgRow.id == JobRow.org_id)
        .where(JobRow.status.in_(statuses))
    ).all())


# ---------------------------------------------------------------------------- usage


def _slice(s: Session) -> ColumnElement[int]:
    """The quarter hour (since the epoch, UTC) of a run's settlement, as an integer."""
    col = BillingRunRow.settled_at
    if s.get_bind().dialect.name == "sqlite":  # stored as naive UTC text; strftime('%s') reads it as UTC
        return cast(func.strftime(literal_column("'%s'"), col), BigInteger) // literal_column(str(SLICE_S))
    # Constants are inlined so that the GROUP BY expression is the SELECT's, textually.
    return cast(func.floor(extract("epoch", col) / literal_column(f"{SLICE_S}.0")), BigInteger)


def usage_slices(s: Session, group_by: str, org_id: int | None, start: datetime, end: datetime,
                 ) -> list[tuple[str, int, int, int, int]]:
    """(group, slice, runs, Σ devices_milli × duration_ms, Σ cost_fen) of the runs settled in
    [start, end), for one org or (org_id None) all; `group_by` is org, pool or type."""
    r = BillingRunRow
    key: ColumnElement[str]
    if group_by == "type":
        key = r.accelerator_type
    elif group_by == "org":
        key = OrgRow.name
    else:
        key = PoolRow.name
    sl = _slice(s)
    stmt = (select(key, sl, func.count(r.id), func.sum(r.devices_milli * r.duration_ms), func.sum(r.cost_fen))
            .select_from(r).where(r.settled_at >= start, r.settled_at < end))
    if group_by in ("org", "pool"):
        stmt = stmt.join(OrgRow, OrgRow.id == r.org_id)
    if group_by == "pool":
        stmt = stmt.join(PoolRow, PoolRow.id == OrgRow.pool_id)
    if org_id is not None:
        stmt = stmt.where(r.org_id == org_id)
    rows: Sequence[Any] = s.execute(stmt.group_by(key, sl)).all()
    return [(str(g), int(n), int(runs), int(dev or 0), int(cost or 0)) for g, n, runs, dev, cost in rows]
