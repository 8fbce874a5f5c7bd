"""Store: jobs, their events, placements and device claims; the scheduler's snapshot.

Invariants:
- A job's status changes only in `apply_transition`, which validates the edge with
  `scheduler.states.transition`, updates with a version guard (0 rows = stale, returns False)
  and writes the event with its reason, all in the caller's transaction.
- Device claims exist exactly while a job is STARTING, RUNNING or CANCELLING: `claim` adds
  them with the PENDING→STARTING change and `release` drops them with the change that leaves
  those statuses. The (node, device) primary key refuses a second claim on a device.
- Functions never commit: the caller's `with db.begin()` is the unit of work.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Text, and_, bindparam, cast, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from quota.ledger import duration_ms
from quota.types import Split
from quota.usage import Accumulator
from scheduler.states import transition
from scheduler.types import (
    ACTIVE,
    Job,
    JobStatus,
    JobSubmission,
    Placement,
    Resources,
    Start,
)
from suanli.db.models import (
    AcceleratorTypeRow,
    BillingRunRow,
    VoucherRow,
    DeviceShareRow,
    UsageRow,
    DeviceClaimRow,
    JobEventRow,
    JobPlacementRow,
    JobRow,
    NodeRow,
    OrgRow,
    ProjectRow,
    UserRow,
)


def insert_job(s: Session, org_id: int, project_id: int, user: UserRow, sub: JobSubmission, now: datetime,
               idempotency_key: str | None = None, spec_sha256: str | None = None) -> int:
    """Insert a PENDING job and its first event. With an `idempotency_key`, a second job of
    the same user with that key makes the flush raise `IntegrityError` (the unique index)."""
    return insert_new_job(s, org_id, project_id, user.id, user.name, sub, now, idempotency_key, spec_sha256)[0]


# Built once: a statement with its parameters passed at execution compiles once and is reused
# (`.values(...)` with the values inside would make a new cache key on every submission).
_INSERT_JOB = insert(JobRow.__table__).returning(JobRow.__table__.c.id)
_INSERT_EVENT = insert(JobEventRow.__table__)


def job_values(org_id: int, project_id: int, user_id: int, sub: JobSubmission, now: datetime,
               idempotency_key: str | None = None, spec_sha256: str | None = None) -> dict[str, Any]:
    """The column values of a new PENDING job (every write path of a submission uses these,
    the async PostgreSQL one in `suanli.fastsubmit` too)."""
    r = sub.resources
    return dict(
        idempotency_key=idempotency_key,
        spec_sha256=spec_sha256,
        name=sub.name,
        org_id=org_id,
        project_id=project_id,
        user_id=user_id,
        status=str(JobStatus.PENDING),
        version=1,
        accelerator_types=list(r.accelerator_types),
        devices_per_node=r.devices_per_node,
        node_count=r.nodes,
        cpus_per_node=r.cpus_per_node,
        memory_mb_per_node=r.memory_mb_per_node,
        device_milli=r.device_milli,
        priority_class=sub.priority_class,
        requeue=sub.requeue,
        stop_signal=sub.stop_signal,
        code=sub.code,
        time_limit_s=sub.time_limit_s,
        grace_s=sub.grace_s,
        command=sub.command,
        working_dir=sub.working_dir,
        env=dict(sub.env),
        submitted_at=now,
        reason=SUBMITTED_REASON,
    )


SUBMITTED_REASON = "submitted; waiting for the scheduler"


def submitted_event_reason(user_name: str) -> str:
    return f"submitted by {user_name}"


def insert_new_job(s: Session, org_id: int, project_id: int, user_id: int, user_name: str, sub: JobSubmission,
                   now: datetime, idempotency_key: str | None = None,
                   spec_sha256: str | None = None) -> tuple[int, dict[str, Any]]:
    """`insert_job` returning (the new id, the values written) (two statements: the job,
    RETURNING its id, and the event); `submitted_job` builds the job from them without
    reading it back."""
    values = job_values(org_id, project_id, user_id, sub, now, idempotency_key, spec_sha256)
    # Core inserts, not the unit of work: the hottest write of the API, and nothing else in
    # this session needs the object.
    conn = s.connection()
    job_id = conn.execute(_INSERT_JOB, values).scalar_one()
    conn.execute(_INSERT_EVENT, dict(job_id=job_id, at=now, from_status=None, to_status=str(JobStatus.PENDING),
                                     reason=submitted_event_reason(user_name)))
    return job_id, values


def submitted_job(job_id: int, v: dict[str, Any], org: str, project: str, user: str) -> Job:
    """The job just inserted (`job_values` `v`, id `job_id`), as `get_job` would read it, from
    what was written (columns left out of the insert are at their defaults: no placements, no
    run, no priority yet) — reading it back would cost two more queries per submission, and
    an ORM row's instrumented constructor costs more than the rest of this."""
    return Job(
        id=job_id, name=v["name"], org=org, project=project, user=user, status=JobStatus.PENDING,
        resources=Resources(tuple(v["accelerator_types"]), v["devices_per_node"], v["node_count"], v["cpus_per_node"],
                            v["memory_mb_per_node"], v["device_milli"]),
        time_limit_s=v["time_limit_s"], grace_s=v["grace_s"], command=v["command"], working_dir=v["working_dir"],
        env=dict(v["env"] or {}), submitted_at=v["submitted_at"], version=v["version"], reason=v["reason"],
        priority_class=v["priority_class"], requeue=v["requeue"], stop_signal=v["stop_signal"], code=v["code"],
    )


def apply_transition(
    s: Session,
    job_id: int,
    expected_version: int,
    from_status: JobStatus,
    to_status: JobStatus,
    reason: str,
    now: datetime,
    **fields: Any,
) -> bool:
    """Change one job's status if it is still at `expected_version`; write its event.
    Returns False (and writes nothing) when the row moved on since it was read."""
    t = transition(job_id, from_status, to_status, reason)
    res = s.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.version == expected_version, JobRow.status == str(from_status))
        .values(status=str(to_status), version=expected_version + 1, reason=t.reason, **fields)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        return False
    s.add(JobEventRow(job_id=job_id, at=now, from_status=str(from_status), to_status=str(to_status), reason=t.reason))
    s.flush()
    return True


def claim(s: Session, job_id: int, start: Start, node_ids: dict[str, int]) -> None:
    """Claim the devices of `start` for the job and record where it is placed.

    Whole devices: one `device_claims` row each (the primary key refuses a device in use).
    A fractional share: the device's claim row must be absent or shared (no job); it is
    locked, and the shares must stay within 1000 thousandths, else `DeviceBusy`."""
    for rank, p in enumerate(start.placements):
        node_id = node_ids[p.node]
        s.add(JobPlacementRow(job_id=job_id, rank=rank, node_id=node_id, devices=list(p.devices)))
        for d in p.devices:
            if start.device_milli >= 1000:
                s.add(DeviceClaimRow(node_id=node_id, device_index=d, job_id=job_id))
            else:
                _share(s, node_id, d, job_id, start.device_milli)
    s.flush()


class DeviceBusy(Exception):
    """A device cannot take the share asked (the snapshot was stale)."""


def _share(s: Session, node_id: int, device: int, job_id: int, milli: int) -> None:
    row = s.scalar(
        select(DeviceClaimRow).where(DeviceClaimRow.node_id == node_id, DeviceClaimRow.device_index == device).with_for_update()
    )
    if row is None:
        s.add(DeviceClaimRow(node_id=node_id, device_index=device, job_id=None))
        s.flush()
    elif row.job_id is not None:
        raise DeviceBusy(f"device {device} of node {node_id} is held whole by job {row.job_id}")
    used = s.scalar(
        select(func.coalesce(func.sum(DeviceShareRow.milli), 0)).where(
            DeviceShareRow.node_id == node_id, DeviceShareRow.device_index == device)
    ) or 0
    if used + milli > 1000:
        raise DeviceBusy(f"device {device} of node {node_id} has {1000 - used}/1000 left, {milli} asked")
    s.add(DeviceShareRow(node_id=node_id, device_index=device, job_id=job_id, milli=milli))


def release(s: Session, job_id: int) -> None:
    """Drop the job's whole-device claims and shares, and shared devices left with no share."""
    s.execute(delete(DeviceClaimRow).where(DeviceClaimRow.job_id == job_id))
    shared = s.execute(select(DeviceShareRow.node_id, DeviceShareRow.device_index).where(DeviceShareRow.job_id == job_id)).all()
    if shared:
        s.execute(delete(DeviceShareRow).where(DeviceShareRow.job_id == job_id))
        for node_id, device in shared:
            left = s.scalar(select(func.count()).select_from(DeviceShareRow).where(
                DeviceShareRow.node_id == node_id, DeviceShareRow.device_index == device))
            if not left:
                s.execute(delete(DeviceClaimRow).where(DeviceClaimRow.node_id == node_id, DeviceClaimRow.device_index == device,
                                                       DeviceClaimRow.job_id.is_(None)))


def clear_placements(s: Session, job_id: int) -> None:
    """Forget where a requeued job was going to run."""
    s.execute(delete(JobPlacementRow).where(JobPlacementRow.job_id == job_id))


def set_bill(s: Session, job_id: int, **fields: Any) -> None:
    """Billing bookkeeping of a job's current run (hold, charged so far, meter step).
    Written in the same transaction as the change that needs it; no version bump."""
    s.execute(update(JobRow).where(JobRow.id == job_id).values(**fields).execution_options(synchronize_session=False))


def show_pending(s: Session, rows: list[dict[str, Any]]) -> None:
    """Write why pending jobs wait (reason, code, priority, estimate), in one statement.
    Not a status change: no version bump, no event; jobs no longer pending are left alone."""
    t = JobRow.__table__
    s.execute(
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.status == str(JobStatus.PENDING))
        .values(reason=bindparam("reason"), reason_code=bindparam("reason_code"),
                estimated_start_at=bindparam("estimated_start_at"), priority=bindparam("priority"),
                priority_factors=bindparam("priority_factors")),
        rows,
    )


# ---------------------------------------------------------------------------- reads


def _job_query():  # type: ignore[no-untyped-def]
    return (
        select(JobRow, OrgRow.name, ProjectRow.name, UserRow.name)
        .join(OrgRow, OrgRow.id == JobRow.org_id)
        .join(ProjectRow, ProjectRow.id == JobRow.project_id)
        .join(UserRow, UserRow.id == JobRow.user_id)
    )


def _placements(s: Session, job_ids: Sequence[int]) -> dict[int, tuple[Placement, ...]]:
    if not job_ids:
        return {}
    out: dict[int, list[Placement]] = defaultdict(list)
    rows = s.execute(
        select(JobPlacementRow.job_id, NodeRow.name, JobPlacementRow.devices)
        .join(NodeRow, NodeRow.id == JobPlacementRow.node_id)
        .where(JobPlacementRow.job_id.in_(job_ids))
        .order_by(JobPlacementRow.job_id, JobPlacementRow.rank)
    )
    for job_id, node, devices in rows:
        out[job_id].append(Placement(node, tuple(devices)))
    return {k: tuple(v) for k, v in out.items()}


def job_from_row(row: JobRow, org: str, project: str, user: str, placements: tuple[Placement, ...]) -> Job:
    return Job(
        id=row.id,
        name=row.name,
        org=org,
        project=project,
        user=user,
        status=JobStatus(row.status),
        resources=Resources(
            accelerator_types=tuple(row.accelerator_types),
            devices_per_node=row.devices_per_node,
            nodes=row.node_count,
            cpus_per_node=row.cpus_per_node,
            memory_mb_per_node=row.memory_mb_per_node,
            device_milli=row.device_milli,
        ),
        time_limit_s=row.time_limit_s,
        grace_s=row.grace_s,
        command=row.command,
        working_dir=row.working_dir,
        env=dict(row.env or {}),
        submitted_at=row.submitted_at,
        version=row.version,
        reason=row.reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
        exit_code=row.exit_code,
        accelerator_type=row.accelerator_type,
        placements=placements,
        price_fen_per_device_hour=row.price_fen_per_device_hour,
        cost_fen=row.cost_fen,
        priority_class=row.priority_class,
        requeue=row.requeue,
        restart_count=row.restart_count,
        reason_code=row.reason_code,
        priority=row.priority,
        priority_factors=tuple(tuple(f) for f in row.priority_factors or ()),  # type: ignore[misc]
        estimated_start_at=row.estimated_start_at,
        stop_by=row.stop_by,
        hold=row.hold,
        run_charged=row.run_charged,
        meter_seq=row.meter_seq,
        subsidy_fen=row.subsidy_fen,
        idle_since=row.idle_since,
        stop_signal=row.stop_signal,
        code=row.code,
    )


def _jobs(s: Session, stmt) -> list[Job]:  # type: ignore[no-untyped-def]
    rows = s.execute(stmt).all()
    placements = _placements(s, [r[0].id for r in rows])
    return [job_from_row(r[0], r[1], r[2], r[3], placements.get(r[0].id, ())) for r in rows]


def get_job(s: Session, job_id: int) -> Job | None:
    jobs = _jobs(s, _job_query().where(JobRow.id == job_id))
    return jobs[0] if jobs else None


def job_org_id(s: Session, job_id: int) -> int | None:
    return s.scalar(select(JobRow.org_id).where(JobRow.id == job_id))


def list_jobs(
    s: Session,
    org_id: int | None,
    statuses: Sequence[JobStatus] = (),
    limit: int = 100,
    before_id: int | None = None,
) -> list[Job]:
    """Newest first. `org_id=None` lists every org (center admins)."""
    q = _job_query()
    if org_id is not None:
        q = q.where(JobRow.org_id == org_id)
    if statuses:
        q = q.where(JobRow.status.in_([str(x) for x in statuses]))
    if before_id is not None:
        q = q.where(JobRow.id < before_id)
    return _jobs(s, q.order_by(JobRow.id.desc()).limit(limit))


class JobSort(StrEnum):
    """Orders of `GET /v1/jobs`, each newest/highest first with the id breaking ties."""

    ID = "id"
    SUBMITTED_AT = "submitted_at"
    PRIORITY = "priority"  # pending jobs by the scheduler's last priority; others (none) last


# Jobs without a priority (not pending, or not yet seen by the scheduler) sort after every
# real one: priorities are in [0, 1].
NO_PRIORITY = -1.0


@dataclass(frozen=True)
class JobFilter:
    """What a listing may be narrowed to; `org_id=None` means every org (center admins)."""

    org_id: int | None = None
    org: str | None = None
    statuses: tuple[JobStatus, ...] = ()
    project: str | None = None
    user: str | None = None
    accelerator_type: str | None = None  # asked for (any preference) or given
    since: datetime | None = None  # submitted at or after


def sort_expr(sort: JobSort) -> Any:
    if sort is JobSort.SUBMITTED_AT:
        return JobRow.submitted_at
    if sort is JobSort.PRIORITY:
        return func.coalesce(JobRow.priority, NO_PRIORITY)
    return JobRow.id


def sort_key(job: Job, sort: JobSort) -> Any:
    """The value of `sort_expr` for a job already read (what a cursor carries)."""
    if sort is JobSort.SUBMITTED_AT:
        return job.submitted_at
    if sort is JobSort.PRIORITY:
        return job.priority if job.priority is not None else NO_PRIORITY
    return job.id


def list_page(s: Session, f: JobFilter, sort: JobSort, limit: int, after: tuple[Any, int] | None = None) -> list[Job]:
    """One page in (sort key, id) descending order, strictly after the (key, id) `after`.

    Keyset pagination: a page starts from the last row's key, not from an offset, so rows
    inserted meanwhile never shift the rest of a walk (new jobs get larger ids and later
    submit times, so they sort before any cursor taken earlier; a new job has no priority
    until the scheduler writes one). Priorities do change as jobs age: a walk by priority
    is stable under inserts, not under the scheduler's re-prioritisation."""
    key = sort_expr(sort)
    q = _job_query()
    if f.org_id is not None:
        q = q.where(JobRow.org_id == f.org_id)
    if f.org is not None:
        q = q.where(OrgRow.name == f.org)
    if f.statuses:
        q = q.where(JobRow.status.in_([str(x) for x in f.statuses]))
    if f.project is not None:
        q = q.where(ProjectRow.name == f.project)
    if f.user is not None:
        q = q.where(UserRow.name == f.user)
    if f.accelerator_type is not None:
        # Asked types are a JSON list; its text holds `"<type>"` exactly when the type is in
        # it (type names are plain: letters, digits, '.', '_', '-'), on SQLite and PostgreSQL.
        asked = cast(JobRow.accelerator_types, Text).contains(f'"{f.accelerator_type}"', autoescape=True)
        q = q.where(or_(JobRow.accelerator_type == f.accelerator_type, asked))
    if f.since is not None:
        q = q.where(JobRow.submitted_at >= f.since)
    if sort is JobSort.ID:
        if after is not None:
            q = q.where(JobRow.id < after[1])
        return _jobs(s, q.order_by(JobRow.id.desc()).limit(limit))
    if after is not None:
        k, last_id = after
        q = q.where(or_(key < k, and_(key == k, JobRow.id < last_id)))
    return _jobs(s, q.order_by(key.desc(), JobRow.id.desc()).limit(limit))


def job_by_idempotency_key(s: Session, user_id: int, key: str) -> tuple[int, str | None] | None:
    """(job id, spec hash) of the user's job submitted with `key`, if any."""
    row = s.execute(select(JobRow.id, JobRow.spec_sha256).where(JobRow.user_id == user_id, JobRow.idempotency_key == key)).first()
    return (row[0], row[1]) if row else None


def job_owner(s: Session, job_id: int) -> tuple[int, int] | None:
    """(org id, user id) of a job."""
    row = s.execute(select(JobRow.org_id, JobRow.user_id).where(JobRow.id == job_id)).first()
    return (row[0], row[1]) if row else None


def jobs_in(s: Session, statuses: Sequence[JobStatus]) -> list[Job]:
    return _jobs(s, _job_query().where(JobRow.status.in_([str(x) for x in statuses])).order_by(JobRow.id))


def active_ids(s: Session, job_ids: Sequence[int]) -> set[int]:
    """Which of `job_ids` hold devices now (STARTING, RUNNING, CANCELLING, PREEMPTING)."""
    if not job_ids:
        return set()
    statuses = [str(x) for x in ACTIVE]
    return set(s.scalars(select(JobRow.id).where(JobRow.id.in_(list(job_ids)), JobRow.status.in_(statuses))))


def status_of(s: Session, job_ids: Sequence[int], status: JobStatus) -> set[int]:
    """Which of `job_ids` are in `status` now."""
    if not job_ids:
        return set()
    return set(s.scalars(select(JobRow.id).where(JobRow.id.in_(list(job_ids)), JobRow.status == str(status))))


def scheduled_at(s: Session, job_ids: Sequence[int]) -> dict[int, datetime | None]:
    if not job_ids:
        return {}
    return dict(s.execute(select(JobRow.id, JobRow.scheduled_at).where(JobRow.id.in_(job_ids))).all())


def events(s: Session, job_id: int) -> list[JobEventRow]:
    return list(s.scalars(select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)))


def requeue_count(s: Session, job_id: int) -> int:
    """How many times the job went back from STARTING to PENDING."""
    return int(s.scalar(
        select(func.count()).select_from(JobEventRow).where(
            JobEventRow.job_id == job_id, JobEventRow.from_status == str(JobStatus.STARTING),
            JobEventRow.to_status == str(JobStatus.PENDING),
        )
    ) or 0)


def count_by_status(s: Session) -> dict[str, int]:
    return dict(s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all())


def add_usage(s: Session, project_id: int, units: float, at: datetime, half_life_s: float) -> None:
    """Add a finished run's usage (billing units valid at `at`) to the project's decayed
    accumulator; runs may end in any order."""
    row = s.get(UsageRow, project_id)
    if row is None:
        s.add(UsageRow(project_id=project_id, units=units, as_of=at))
        s.flush()
        return
    acc = Accumulator(row.units, row.as_of.timestamp(), half_life_s).add(units, at.timestamp())
    row.units = acc.value
    row.as_of = datetime.fromtimestamp(acc.as_of, at.tzinfo)
    s.flush()


def billing_weight(s: Session, accelerator_type: str) -> float:
    w = s.scalar(select(AcceleratorTypeRow.billing_weight).where(AcceleratorTypeRow.name == accelerator_type))
    return float(w) if w is not None else 1.0


def job_project_id(s: Session, job_id: int) -> int:
    pid = s.scalar(select(JobRow.project_id).where(JobRow.id == job_id))
    assert pid is not None
    return pid


def record_run(s: Session, job: Job, started: datetime | None, ended: datetime, final: Split, center_fault: bool,
               now: datetime) -> None:
    """The evidence of one settled run, for statements and program reports."""
    row = s.get(JobRow, job.id)
    assert row is not None and job.accelerator_type is not None
    voucher_ids = [v for v, _ in final.voucher_parts]
    program_of = dict(s.execute(select(VoucherRow.id, VoucherRow.program_id).where(VoucherRow.id.in_(voucher_ids))).all()) \
        if voucher_ids else {}
    programs: dict[str, int] = {}
    for v, fen in final.voucher_parts:
        key = str(program_of[v])
        programs[key] = programs.get(key, 0) + fen
    ms = duration_ms(started, ended) if started is not None and not center_fault else 0
    s.add(BillingRunRow(
        job_id=job.id, run=job.restart_count, org_id=row.org_id, project_id=row.project_id, user_id=row.user_id,
        accelerator_type=job.accelerator_type, devices_milli=job.resources.total_devices * job.resources.device_milli,
        started_at=started, ended_at=ended, duration_ms=ms, price_fen_per_device_hour=job.price_fen_per_device_hour or 0,
        cost_fen=final.total_fen, cash_fen=final.cash_fen, subsidy_fen=final.voucher_fen, programs=programs,
        center_fault=center_fault, settled_at=now,
    ))
    s.flush()
