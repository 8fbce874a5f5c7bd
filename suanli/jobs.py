"""Job service: submit, read, cancel, logs. Called by the API routers (and tests).

Invariants:
- Every check that can refuse a submission runs before anything is written, and the job
  row and its first event are written in one transaction: a refused job leaves no trace.
- A caller sees only jobs of their own org (center admins see all); a job of another org is
  reported as not found, so ids of other orgs' jobs are not disclosed.
- Cancel goes through the state machine: PENDING → CANCELLED at once; STARTING, RUNNING or
  PREEMPTING → CANCELLING (stop by now + grace), and the scheduler stops the process and
  finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.types import TERMINAL, Job, JobStatus, JobSubmission
from suanli.db.engine import Database
from suanli.db.store import jobs as job_store
from suanli.db.store import nodes as node_store
from suanli.db.store import tenancy
from suanli.errors import conflict, forbidden, invalid, not_found
from suanli.identity import Principal, Role


def utcnow() -> datetime:
    return datetime.now(UTC)


def submit(db: Database, who: Principal, sub: JobSubmission) -> Job:
    if who.role not in (Role.MEMBER, Role.ORG_ADMIN) or who.org_id is None:
        raise forbidden("only members of an org can submit jobs")
    now = utcnow()
    with db.begin() as s:
        org = s.get(tenancy.OrgRow, who.org_id)
        if org is None or org.status != "verified":
            raise conflict("org_not_active", f"org {who.org} is not verified (status: {org.status if org else 'gone'})")
        project = tenancy.get_project(s, who.org_id, sub.project)
        if project is None:
            raise invalid("unknown_project", f"org {who.org} has no project {sub.project!r}", "project")
        _check_resources(s, sub)
        if sub.priority_class not in tenancy.priority_classes(s):
            known = ", ".join(sorted(tenancy.priority_classes(s)))
            raise invalid("unknown_priority_class", f"no priority class {sub.priority_class!r}; known: {known}", "priority_class")
        user = s.get(tenancy.UserRow, who.user_id)
        assert user is not None
        job_id = job_store.insert_job(s, who.org_id, project.id, user, sub, now)
        job = job_store.get_job(s, job_id)
    assert job is not None
    return job


def _check_resources(s, sub: JobSubmission) -> None:  # type: ignore[no-untyped-def]
    r = sub.resources
    known = tenancy.accelerator_vendors(s)
    unknown = [t for t in r.accelerator_types if t not in known]
    if unknown:
        raise invalid(
            "unknown_accelerator_type",
            f"unknown accelerator type {', '.join(unknown)}; known: {', '.join(sorted(known)) or 'none'}",
            "resources.accelerator",
        )
    counts = node_store.largest_fit(s, list(r.accelerator_types))
    for t in r.accelerator_types:
        if sum(1 for c in counts[t] if c >= r.devices_per_node) >= r.nodes:
            return
    detail = "; ".join(
        f"{t}: {len(counts[t])} server(s), largest {max(counts[t], default=0)} devices" for t in r.accelerator_types
    )
    field = "resources.devices_per_node" if all(max(counts[t], default=0) < r.devices_per_node for t in r.accelerator_types) else "resources.nodes"
    raise invalid(
        "job_too_large",
        f"no {r.nodes} server(s) with {r.devices_per_node} device(s) each exist for this job ({detail})",
        field,
    )


def get(db: Database, who: Principal, job_id: int) -> Job:
    with db.begin() as s:
        job = job_store.get_job(s, job_id)
        org_id = job_store.job_org_id(s, job_id)
    if job is None or org_id is None or not who.can_see_org(org_id):
        raise not_found("job", job_id)
    return job


@dataclass(frozen=True)
class Event:
    at: datetime
    from_status: str | None
    to_status: str | None
    reason: str


def events(db: Database, who: Principal, job_id: int) -> list[Event]:
    get(db, who, job_id)
    with db.begin() as s:
        return [Event(e.at, e.from_status, e.to_status, e.reason) for e in job_store.events(s, job_id)]


def list_for(db: Database, who: Principal, statuses: list[JobStatus], limit: int, before_id: int | None) -> list[Job]:
    with db.begin() as s:
        if who.sees_all_orgs:
            return job_store.list_jobs(s, None, statuses, limit, before_id)
        if who.org_id is None:
            return []
        return job_store.list_jobs(s, who.org_id, statuses, limit, before_id)


def cancel(db: Database, who: Principal, job_id: int) -> Job:
    for _ in range(5):  # retry when the scheduler moved the job between our read and write
        job = get(db, who, job_id)
        if job.status in TERMINAL:
            raise conflict("job_finished", f"job {job_id} already ended ({job.status})")
        if job.status is JobStatus.CANCELLING:
            return job
        to = JobStatus.CANCELLED if job.status is JobStatus.PENDING else JobStatus.CANCELLING
        now = utcnow()
        extra = {"ended_at": now} if to is JobStatus.CANCELLED else {"stop_by": now + timedelta(seconds=job.grace_s)}
        with db.begin() as s:
            done = job_store.apply_transition(s, job_id, job.version, job.status, to, f"cancelled by {who.user}", now, **extra)
        if done:
            return get(db, who, job_id)
    raise conflict("busy", f"job {job_id} kept changing; try again")


def log_path(jobs_dir: Path, job_id: int, rank: int = 0) -> Path:
    """Where the runner writes a job's combined stdout and stderr."""
    return jobs_dir / str(job_id) / f"rank-{rank}.log"


def read_log(jobs_dir: Path, job_id: int, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """Bytes of the log from `offset` (at most `max_bytes`) and the next offset."""
    path = log_path(jobs_dir, job_id)
    if offset < 0:
        raise invalid("bad_offset", "offset must be >= 0", "offset")
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)
