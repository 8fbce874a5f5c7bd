"""Job submission's async path on PostgreSQL: one prepared statement, one round trip, on the
event loop (no thread-pool hop), through `suanli.db.apool.AsyncPool`.

Invariants:
- This path takes only the plain case: a member or org admin submits, the cached reference
  data (`suanli.refcache`, at most `TTL_S` old) accepts the submission, the org is verified,
  the project exists and the Idempotency-Key (if any) is new. In every other case it writes
  nothing and returns None, and the caller runs the sync `suanli.jobs.submit_keyed`, which
  answers exactly as it always has (its errors, a retry's replay, 409 for a reused key). So
  the answers are the sync path's by construction; this one only makes the common case cheap.
- The statement is one transaction (autocommit, one statement): the job and its first event
  are written together or not at all. The insert is conditional on the org being verified
  and the project existing, read in the same statement.
- Concurrent retries with one key: `ON CONFLICT (user_id, idempotency_key) DO NOTHING` on the
  unique index lets one insert win; the others wait for its commit, insert nothing and go to
  the sync path, which returns the winner's job (200). Never read-then-write.
- The values written are `suanli.db.store.jobs.job_values`, the sync path's, and the answer is
  built by `submitted_job` from them, as on the sync path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Json
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import JSON

from scheduler.types import Job, JobStatus, JobSubmission, Resources
from suanli import jobs as service
from suanli import refcache
from suanli.db.apool import AsyncPool
from suanli.db.engine import Database
from suanli.db.models import JobEventRow, JobRow, OrgRow, ProjectRow, UserRow
from suanli.db.store import jobs as job_store
from suanli.identity import Principal, Role

# The columns the sync path writes (taken from `job_values` itself, so the two cannot drift).
_SAMPLE = JobSubmission("x", "x", Resources(("x",)), 1, 0.0, "x", None, {})
_JOB_COLUMNS = tuple(c for c in job_store.job_values(0, 0, 0, _SAMPLE, datetime.now(UTC)) if c != "project_id")
_JSON_COLUMNS = frozenset(c.name for c in JobRow.__table__.columns if isinstance(c.type, JSON))


def _submit_sql() -> str:
    """The statement (built once, from the tables' metadata, so column names and types are the
    models'): who submits (org status, project id, user name), the job inserted only if the
    org is verified and the project exists, its event, and the new id with the user's name."""
    dialect = postgresql.dialect()
    cols = JobRow.__table__.columns

    def param(name: str) -> str:
        # The type without its length: a cast to VARCHAR(n) would cut a long value silently,
        # where the insert refuses it.
        return f"%({name})s::{cols[name].type.compile(dialect=dialect).split('(')[0]}"

    jobs, events = JobRow.__tablename__, JobEventRow.__tablename__
    return (
        f"WITH who AS ("
        f"SELECT o.status AS org_status, p.id AS project_id, u.name AS user_name "
        f"FROM {UserRow.__tablename__} u JOIN {OrgRow.__tablename__} o ON o.id = u.org_id "
        f"LEFT JOIN {ProjectRow.__tablename__} p ON p.org_id = o.id AND p.name = %(project)s::text "
        f"WHERE u.id = %(user_id)s::integer AND o.id = %(org_id)s::integer), "
        f"job AS (INSERT INTO {jobs} (project_id, {', '.join(_JOB_COLUMNS)}) "
        f"SELECT who.project_id, {', '.join(param(c) for c in _JOB_COLUMNS)} FROM who "
        f"WHERE who.org_status = 'verified' AND who.project_id IS NOT NULL "
        f"ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id), "
        f"event AS (INSERT INTO {events} (job_id, at, from_status, to_status, reason) "
        f"SELECT job.id, {param('submitted_at')}, NULL, %(to_status)s::text, 'submitted by ' || who.user_name "
        f"FROM job, who) "
        f"SELECT job.id, who.user_name, who.project_id FROM job, who"
    )


SUBMIT_SQL = _submit_sql()


def _applies(who: Principal, key: str | None, sub: JobSubmission, db: Database) -> bool:
    """Whether this path may take the submission (module docstring): anything it would have
    to refuse or replay is left to the sync path."""
    if who.role not in (Role.MEMBER, Role.ORG_ADMIN) or who.org_id is None:
        return False
    if key is not None and not service.IDEMPOTENCY_KEY.match(key):
        return False
    ref = refcache.cached(db)
    return ref is not None and service.refusal(ref, sub) is None


async def submit(pool: AsyncPool, db: Database, who: Principal, sub: JobSubmission, key: str | None) -> Job | None:
    """The new job, or None when the sync path must answer (module docstring)."""
    if not _applies(who, key, sub, db):
        return None
    assert who.org_id is not None
    digest = service.spec_digest(sub) if key is not None else None
    values: dict[str, Any] = job_store.job_values(who.org_id, 0, who.user_id, sub, service.utcnow(), key, digest)
    params = {c: (Json(values[c]) if c in _JSON_COLUMNS else values[c]) for c in _JOB_COLUMNS}
    params.update(project=sub.project, to_status=str(JobStatus.PENDING))
    async with pool.connection() as conn:
        row = await (await conn.execute(SUBMIT_SQL, params)).fetchone()
    if row is None:
        return None  # not verified, no such project, or the key was used: the sync path says which
    job_id, user_name, project_id = row
    values["project_id"] = project_id
    return job_store.submitted_job(job_id, values, who.org or "", sub.project, user_name)
