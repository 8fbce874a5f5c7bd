"""Job service: submit, read, cancel, logs. Called by the API routers (and tests).

Invariants:
- Every check that can refuse a submission runs before anything is written, and the job
  row and its first event are written in one transaction: a refused job leaves no trace.
- A caller sees only jobs of their own org (center admins see all); a job of another org is
  reported as not found, so ids of other orgs' jobs are not disclosed.
- Cancel goes through the state machine: PENDING or HELD → CANCELLED at once; STARTING,
  RUNNING or PREEMPTING → CANCELLING (stop by now + grace), and the scheduler stops the
  process and finishes the job.
- Idempotent submit: a job submitted with an `Idempotency-Key` stores the key (unique per
  user, by a unique index) and the SHA-256 of its normalised submission. A retry with the
  same key returns that job, whatever its state now; the same key with another spec is
  `idempotency_key_reused`. Concurrent retries all try the insert: the index lets one win and
  the others catch the IntegrityError and return the winner's job (never read-then-write).
- Hold/release (owner, their org's admin, a center admin): PENDING → HELD → PENDING; the
  submit time is never touched, so a released job keeps its age. Requeue (center admins) of a
  STARTING/RUNNING job takes the scheduler's preemption path (PREEMPTING with a stop
  deadline; the loop stops the runner and the reconciler puts the job back to PENDING).
- Status changes here are version-guarded and retried a few times when the scheduler moved
  the job between the read and the write; actions an admin takes on someone else's job (and
  every requeue) write an audit row in the same transaction.
- Logs: each rank writes `<jobs_dir>/<id>/rank-<n>.log`. One rank's log is served as raw
  bytes by offset; the merged view of a multi-node job prefixes every line with `[rank N] `
  and pages by a cursor of per-rank offsets (rank order within each read, whole lines only
  until the job has ended). A single-node job's merged view is its rank 0 log, unprefixed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.exc import IntegrityError

from scheduler.types import TERMINAL, Job, JobStatus, JobSubmission
from suanli.db.engine import Database
from suanli.db.store import billing as billing_store
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.db.store.jobs import JobFilter, JobSort
from suanli import refcache
from suanli.db.models import ProjectRow
from suanli.errors import SuanliError, conflict, forbidden, invalid, not_found
from suanli.identity import Principal, Role

# Visible ASCII, as in the IETF draft "The Idempotency-Key HTTP Header Field" (a UUID fits).
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_PAGE = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def spec_digest(sub: JobSubmission) -> str:
    """SHA-256 of the normalised submission: the same spec as JSON or YAML, with fields in
    any order or durations written differently, hashes the same."""
    return hashlib.sha256(json.dumps(asdict(sub), sort_keys=True, default=str).encode()).hexdigest()


def submit(db: Database, who: Principal, sub: JobSubmission, idempotency_key: str | None = None) -> Job:
    return submit_keyed(db, who, sub, idempotency_key)[0]


def submit_keyed(db: Database, who: Principal, sub: JobSubmission, idempotency_key: str | None) -> tuple[Job, bool]:
    """Submit a job; (job, True) when created, (the earlier job, False) for a retry with the
    same `idempotency_key` and spec."""
    if who.role not in (Role.MEMBER, Role.ORG_ADMIN) or who.org_id is None:
        raise forbidden("only members of an org can submit jobs")
    digest = None
    if idempotency_key is not None:
        if not IDEMPOTENCY_KEY.match(idempotency_key):
            raise invalid("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters "
                          "(a UUID is a good key)", "Idempotency-Key")
        digest = spec_digest(sub)
    try:
        return _insert(db, who, sub, idempotency_key, digest)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # A concurrent retry with the same key committed first: the unique index refused ours.
        earlier = _replay(db, who, idempotency_key, digest)
        if earlier is None:
            raise
        return earlier, False


def _replay(db: Database, who: Principal, key: str, digest: str | None) -> Job | None:
    with db.begin() as s:
        return _earlier(s, who, key, digest)


def _earlier(s: Any, who: Principal, key: str, digest: str | None) -> Job | None:
    """The job this user submitted with `key` (a retry), or None; 409 if its spec differed."""
    found = job_store.job_by_idempotency_key(s, who.user_id, key)
    if found is None:
        return None
    job_id, stored = found
    if stored != digest:
        raise conflict("idempotency_key_reused", f"Idempotency-Key {key!r} was used for job {job_id} with a different "
                       "spec; use a new key for a new job")
    job = job_store.get_job(s, job_id)
    assert job is not None
    return job


# The submitter's org status, the project's id (None if it has no such project) and the user's
# name, in one query; built once so it compiles once.
_SUBMITTER = (
    select(tenancy.OrgRow.status, ProjectRow.id, tenancy.UserRow.name)
    .select_from(tenancy.UserRow)
    .join(tenancy.OrgRow, tenancy.OrgRow.id == tenancy.UserRow.org_id)
    .outerjoin(ProjectRow, and_(ProjectRow.org_id == tenancy.OrgRow.id, ProjectRow.name == bindparam("project")))
    .where(tenancy.UserRow.id == bindparam("user_id"), tenancy.OrgRow.id == bindparam("org_id"))
)


def _insert(db: Database, who: Principal, sub: JobSubmission, key: str | None, digest: str | None) -> tuple[Job, bool]:
    """(the new job, True), or (the earlier job, False) for a retry with the same key. One
    transaction, four round trips on PostgreSQL when the reference data is cached (the
    org/project/user row, the job, its event, the commit), one more with a key."""
    assert who.org_id is not None
    now = utcnow()
    with db.begin() as s:
        if key is not None:
            earlier = _earlier(s, who, key, digest)  # the common retry: no insert attempted
            if earlier is not None:
                return earlier, False
        found = s.connection().execute(_SUBMITTER, {"user_id": who.user_id, "org_id": who.org_id,
                                                    "project": sub.project}).first()
        if found is None or found[0] != "verified":
            status = found[0] if found else "gone"
            raise conflict("org_not_active", f"org {who.org} is not verified (status: {status})")
        _, project_id, user_name = found
        if project_id is None:
            raise invalid("unknown_project", f"org {who.org} has no project {sub.project!r}", "project")
        if refusal(refcache.reference(db, s), sub) is not None:
            refused = refusal(refcache.reference(db, s, fresh=True), sub)  # never refuse on stale data
            if refused is not None:
                raise refused
        job_id, values = job_store.insert_new_job(s, who.org_id, project_id, who.user_id, user_name, sub, now, key, digest)
        return job_store.submitted_job(job_id, values, who.org or "", sub.project, user_name), True


def refusal(ref: refcache.Reference, sub: JobSubmission) -> SuanliError | None:
    """Why the reference data refuses the submission (type, size, class), or None."""
    r = sub.resources
    unknown = [t for t in r.accelerator_types if t not in ref.vendors]
    if unknown:
        return invalid(
            "unknown_accelerator_type",
            f"unknown accelerator type {', '.join(unknown)}; known: {', '.join(sorted(ref.vendors)) or 'none'}",
            "resources.accelerator",
        )
    sizes = {t: ref.sizes.get(t, ()) for t in r.accelerator_types}
    if not any(sum(1 for c in sizes[t] if c >= r.devices_per_node) >= r.nodes for t in r.accelerator_types):
        detail = "; ".join(f"{t}: {len(sizes[t])} server(s), largest {max(sizes[t], default=0)} devices"
                           for t in r.accelerator_types)
        field = "resources.devices_per_node" if all(max(sizes[t], default=0) < r.devices_per_node
                                                    for t in r.accelerator_types) else "resources.nodes"
        return invalid("job_too_large",
                       f"no {r.nodes} server(s) with {r.devices_per_node} device(s) each exist for this job ({detail})", field)
    if sub.priority_class not in ref.classes:
        known = ", ".join(sorted(ref.classes))
        return invalid("unknown_priority_class", f"no priority class {sub.priority_class!r}; known: {known}", "priority_class")
    return None


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


@dataclass(frozen=True)
class ListQuery:
    """A listing as asked: filters by name, an order and an opaque cursor."""

    statuses: tuple[JobStatus, ...] = ()
    project: str | None = None
    user: str | None = None
    accelerator_type: str | None = None
    org: str | None = None
    since: datetime | None = None
    sort: JobSort = JobSort.ID
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[Job]
    next_cursor: str | None  # None: this was the last page


def encode_cursor(sort: JobSort, key: Any, job_id: int) -> str:
    """Opaque to clients: the order it belongs to, the last row's sort key and id."""
    k = key.isoformat() if isinstance(key, datetime) else key
    raw = json.dumps({"s": str(sort), "k": k, "i": job_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: JobSort) -> tuple[Any, int]:
    bad = invalid("invalid_cursor", "the cursor is not one this listing gave out (pass next_cursor back unchanged, "
                  "with the same sort)", "cursor")
    try:
        d = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(d, dict) or d.get("s") != str(sort) or type(d.get("i")) is not int:
            raise bad
        k = d.get("k")
        if sort is JobSort.SUBMITTED_AT:
            key: Any = datetime.fromisoformat(k)  # type: ignore[arg-type]
            if key.tzinfo is None:
                raise bad
        elif sort is JobSort.PRIORITY:
            if type(k) not in (int, float):
                raise bad
            key = float(k)  # type: ignore[arg-type]
        else:
            key = d["i"]
        return key, d["i"]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as e:
        raise bad from e


def list_for(db: Database, who: Principal, q: ListQuery) -> Page:
    """A page of the jobs the caller may see, newest (or highest) first.

    Members and org admins see their own org's jobs; only center admins may name another
    org (`forbidden` otherwise, whether that org exists or not)."""
    if not 1 <= q.limit <= MAX_PAGE:
        raise invalid("invalid_limit", f"limit must be between 1 and {MAX_PAGE}", "limit")
    after = decode_cursor(q.cursor, q.sort) if q.cursor else None
    if who.sees_all_orgs:
        org_id = None
    elif who.org_id is None:
        return Page([], None)
    else:
        if q.org is not None and q.org != who.org:
            raise forbidden("only center admins list other orgs' jobs")
        org_id = who.org_id
    f = JobFilter(org_id=org_id, org=q.org, statuses=q.statuses, project=q.project, user=q.user,
                  accelerator_type=q.accelerator_type, since=q.since)
    with db.begin() as s:
        jobs = job_store.list_page(s, f, q.sort, q.limit + 1, after)  # one more: is there a next page?
    items = jobs[: q.limit]
    nxt = encode_cursor(q.sort, job_store.sort_key(items[-1], q.sort), items[-1].id) if len(jobs) > q.limit else None
    return Page(items, nxt)


# ---------------------------------------------------------------------------- status changes


Change = tuple[JobStatus, str, dict[str, Any]]  # (to, reason, fields to set)


def _change(db: Database, who: Principal, job_id: int, action: str, decide: Callable[[Job], Change | Job],
            audit: bool | None = None) -> Job:
    """Apply `decide(job)` (a change, or the job itself for nothing to do) with a version
    guard, retrying when the scheduler moved the job between our read and write. `audit`:
    write an audit row (None: when an admin acts on a job that is not their own)."""
    for _ in range(5):
        job = get(db, who, job_id)
        d = decide(job)
        if isinstance(d, Job):
            return d
        to, reason, fields = d
        now = utcnow()
        with db.begin() as s:
            done = job_store.apply_transition(s, job_id, job.version, job.status, to, reason, now, **fields)
            if done and (audit or (audit is None and who.role in (Role.ORG_ADMIN, Role.CENTER_ADMIN) and who.user != job.user)):
                billing_store.audit(s, who.user, f"job.{action}", f"job:{job_id}", {"status": str(job.status)},
                                    {"status": str(to), "reason": reason}, now)
        if done:
            return get(db, who, job_id)
    raise conflict("busy", f"job {job_id} kept changing; try again")


def cancel(db: Database, who: Principal, job_id: int) -> Job:
    def decide(job: Job) -> Change | Job:
        if job.status in TERMINAL:
            raise conflict("job_finished", f"job {job_id} already ended ({job.status})")
        if job.status is JobStatus.CANCELLING:
            return job
        if job.status in (JobStatus.PENDING, JobStatus.HELD):
            return JobStatus.CANCELLED, f"cancelled by {who.user}", {"ended_at": utcnow()}
        return JobStatus.CANCELLING, f"cancelled by {who.user}", {"stop_by": utcnow() + timedelta(seconds=job.grace_s)}

    return _change(db, who, job_id, "cancel", decide)


def _may_manage(db: Database, who: Principal, job_id: int, what: str) -> None:
    """Owner, an admin of the job's org, or a center admin; others of the org get 403
    (the job is visible to them, so 404 would be a lie)."""
    get(db, who, job_id)  # 404 first for other orgs' jobs
    with db.begin() as s:
        owner = job_store.job_owner(s, job_id)
    assert owner is not None
    org_id, user_id = owner
    if who.sees_all_orgs or who.user_id == user_id or (who.role is Role.ORG_ADMIN and who.org_id == org_id):
        return
    raise forbidden(f"only the job's owner, an admin of its org or a center admin may {what} it")


def hold(db: Database, who: Principal, job_id: int) -> Job:
    """Keep a pending job out of scheduling (PENDING → HELD); holding a held job is a no-op."""
    _may_manage(db, who, job_id, "hold")

    def decide(job: Job) -> Change | Job:
        if job.status is JobStatus.HELD:
            return job
        if job.status is not JobStatus.PENDING:
            raise conflict("job_not_pending", f"only pending jobs can be held; job {job_id} is {job.status}")
        return JobStatus.HELD, f"held by {who.user}", dict(
            reason_code="held", priority=None, priority_factors=None, estimated_start_at=None)

    return _change(db, who, job_id, "hold", decide)


def release(db: Database, who: Principal, job_id: int) -> Job:
    """Put a held job back in the queue (HELD → PENDING) with its original submit time;
    releasing a job that is not held is 409 `job_not_held`."""
    _may_manage(db, who, job_id, "release")

    def decide(job: Job) -> Change | Job:
        if job.status is not JobStatus.HELD:
            raise conflict("job_not_held", f"job {job_id} is {job.status}, not HELD")
        return JobStatus.PENDING, f"released by {who.user}; waiting for the scheduler", dict(reason_code="")

    return _change(db, who, job_id, "release", decide)


def requeue(db: Database, who: Principal, job_id: int) -> Job:
    """Center admins: stop a STARTING/RUNNING job and put it back in the queue, through the
    preemption path (PREEMPTING with stop_by = now + its grace; the scheduler sends the stop
    signal and the reconciler requeues it with its submit time, charging the time it ran).

    409 codes, checked in this order: `job_finished` (ended), `job_not_requeueable` (the job
    asked `requeue: false`; a preemption would end it PREEMPTED — cancel it instead),
    `job_not_running` (PENDING/HELD: already queued), `job_stopping` (already CANCELLING or
    PREEMPTING)."""
    if not who.sees_all_orgs:
        raise forbidden("only center admins requeue jobs")

    def decide(job: Job) -> Change | Job:
        if job.status in TERMINAL:
            raise conflict("job_finished", f"job {job_id} already ended ({job.status}); submit it again instead")
        if not job.requeue:
            raise conflict("job_not_requeueable", f"job {job_id} asked not to be requeued (requeue: false); cancel it instead")
        if job.status in (JobStatus.PENDING, JobStatus.HELD):
            raise conflict("job_not_running", f"job {job_id} is {job.status}: it is in the queue already")
        if job.status in (JobStatus.CANCELLING, JobStatus.PREEMPTING):
            raise conflict("job_stopping", f"job {job_id} is {job.status}: it is being stopped already")
        return JobStatus.PREEMPTING, f"requeued by admin {who.user}", {"stop_by": utcnow() + timedelta(seconds=job.grace_s)}

    return _change(db, who, job_id, "requeue", decide, audit=True)


def log_path(jobs_dir: Path, job_id: int, rank: int = 0) -> Path:
    """Where rank `rank`'s runner writes its combined stdout and stderr."""
    return jobs_dir / str(job_id) / f"rank-{rank}.log"


def log_ranks(job: Job) -> int:
    """How many rank logs the job has (or will have): one per server."""
    return max(1, len(job.placements) or job.resources.nodes)


def check_rank(job: Job, rank: int | None) -> None:
    if rank is not None and not 0 <= rank < log_ranks(job):
        raise invalid("bad_rank", f"job {job.id} has ranks 0..{log_ranks(job) - 1}, not {rank}", "rank")


def read_log(jobs_dir: Path, job_id: int, offset: int, max_bytes: int, rank: int = 0) -> tuple[bytes, int]:
    """Bytes of one rank's log from `offset` (at most `max_bytes`) and the next offset."""
    path = log_path(jobs_dir, job_id, rank)
    if offset < 0:
        raise invalid("bad_offset", "offset must be >= 0", "offset")
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def parse_cursor(text: str | None, ranks: int) -> list[int]:
    """A merged-log cursor: one byte offset per rank, comma-separated ("" or None: the start)."""
    if not text:
        return [0] * ranks
    try:
        cursor = [int(x) for x in text.split(",")]
    except ValueError:
        cursor = []
    if len(cursor) != ranks or any(c < 0 for c in cursor):
        raise invalid("bad_cursor", f"cursor must be {ranks} byte offsets >= 0, comma-separated (X-Log-Cursor)", "cursor")
    return cursor


def read_merged(jobs_dir: Path, job_id: int, cursor: list[int], max_bytes: int, final: bool) -> tuple[bytes, list[int]]:
    """The merged view of a multi-rank job's logs from `cursor` (one offset per rank): each
    whole line prefixed `[rank N] `, rank 0's new lines first, then rank 1's, …, reading at
    most `max_bytes` of log. A line still being written is held back until it ends, unless
    `final` (the job has ended) or it alone is longer than `max_bytes`. Returns the text and
    the next cursor."""
    out: list[bytes] = []
    nxt = list(cursor)
    budget = max_bytes
    for rank, offset in enumerate(cursor):
        if budget <= 0:
            break
        data, _ = read_log(jobs_dir, job_id, offset, budget, rank)
        if not final and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if cut or len(data) < budget:  # else one line longer than the budget: send it in pieces
                data = data[:cut]
        if not data:
            continue
        budget -= len(data)
        nxt[rank] = offset + len(data)
        prefix = f"[rank {rank}] ".encode()
        lines = data.splitlines(keepends=True)
        out.extend(prefix + line for line in lines)
        if not lines[-1].endswith(b"\n"):
            out.append(b"\n")  # the last, unterminated line of a finished rank
    return b"".join(out), nxt


FOLLOW_CHUNK = 256 * 1024


async def follow_log(db: Database, who: Principal, jobs_dir: Path, job_id: int, offset: int,
                     disconnected: Callable[[], Awaitable[bool]], poll_s: float = 0.5, rank: int = 0) -> AsyncIterator[bytes]:
    """One rank's log from `offset` as it grows, until the job has ended and all of it was
    sent, or the client went away. Each round reads the status first and then the file to its
    end, so once a terminal status is seen every byte written before it has been sent.
    Database and file reads run in worker threads; nothing is held between rounds."""
    while True:
        job = await asyncio.to_thread(get, db, who, job_id)
        while True:
            data, offset = await asyncio.to_thread(read_log, jobs_dir, job_id, offset, FOLLOW_CHUNK, rank)
            if not data:
                break
            yield data
        if job.status in TERMINAL or await disconnected():
            return
        await asyncio.sleep(poll_s)


async def follow_merged(db: Database, who: Principal, jobs_dir: Path, job_id: int, cursor: list[int],
                        disconnected: Callable[[], Awaitable[bool]], poll_s: float = 0.5) -> AsyncIterator[bytes]:
    """`follow_log` for the merged view: whole prefixed lines of every rank as they come
    (each round: rank 0's new lines, then rank 1's, …), until the job has ended."""
    while True:
        job = await asyncio.to_thread(get, db, who, job_id)
        final = job.status in TERMINAL
        while True:
            data, cursor = await asyncio.to_thread(read_merged, jobs_dir, job_id, cursor, FOLLOW_CHUNK, final)
            if not data:
                break
            yield data
        if final or await disconnected():
            return
        await asyncio.sleep(poll_s)
