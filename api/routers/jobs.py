"""/v1/jobs: submit (JSON or YAML, idempotent with `Idempotency-Key`), list (filters, sort,
cursor pages), get, events, cancel, hold/release, requeue (center admins), logs (follow).

Who may call what: every signed-in principal lists and reads the jobs of their own org
(center admins: all; another org's job is 404); members and org admins submit; cancel:
anyone who sees the job; hold/release: its owner, an admin of its org, a center admin;
requeue: center admins.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import DbDep, PrincipalDep, SettingsDep
from api.schemas.jobs import EventOut, JobList, JobOut, JobSpecIn, job_out, submission_from_spec
from api.validation import validation_error
from scheduler.types import TERMINAL, JobStatus
from suanli import fastsubmit
from suanli import jobs as service
from suanli.code import blob_path
from suanli.db.store.jobs import JobSort
from suanli.db.engine import Database
from suanli.errors import invalid
from suanli.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
# Bounded: ids are 32-bit INTEGER columns; a larger number is 422, not a database overflow (500).
JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases: a job spec never needs them, and refusing them stops
    'billion laughs' documents from expanding during validation."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def parse_spec_body(body: bytes, content_type: str) -> Any:
    try:
        text = body.decode("utf-8") if body else ""
    except UnicodeDecodeError as e:
        raise invalid("invalid_encoding", f"the job spec must be UTF-8 text ({e.reason} at byte {e.start})") from e
    if any(t in content_type for t in YAML_TYPES):
        try:
            return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            raise invalid("invalid_yaml", f"the job spec is not valid YAML: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid("invalid_json", f"the job spec is not valid JSON: {e}") from e


_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobSpecIn"}},
            "application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpecIn"}},
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    openapi_extra=_SPEC_BODY,
    responses={
        200: {"model": JobOut, "description": "A retry: the job this `Idempotency-Key` created earlier, as it is now "
              "(header `Idempotent-Replayed: true`)"},
        409: {"description": "`idempotency_key_reused`: the key was used with a different spec"},
    },
)
async def submit_job(
    request: Request,
    who: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description="Any unique string (a UUID) per intended job: a retried submit with the same key returns the "
                    "same job (200) instead of creating another (201). Unique per user, kept with the job.",
    )] = None,
) -> Response:
    """Submit a job. The body is a job spec as JSON, or as YAML with `Content-Type: application/yaml`."""
    # From the app's state, not as dependencies: each dependency is resolved per request.
    db: Database = request.app.state.db
    settings: Settings = request.app.state.settings
    data = parse_spec_body(await request.body(), request.headers.get("content-type", ""))
    if not isinstance(data, dict):
        raise invalid("invalid_spec", "the job spec must be a mapping of fields")
    try:
        spec = JobSpecIn.model_validate(data)
    except ValidationError as e:
        raise validation_error(e.errors(), "invalid_spec") from e
    sub = submission_from_spec(spec, settings.default_time_limit_s, settings.max_time_limit_s, settings.default_grace_s)
    if sub.code is not None and not blob_path(settings.code_dir, sub.code).is_file():
        raise invalid("unknown_code", f"no uploaded code {sub.code}: upload it first (POST /v1/code)", "code")
    # PostgreSQL under the server's lifespan: the common case in one statement on the event
    # loop (suanli.fastsubmit); anything else, and SQLite, takes the sync path in the pool.
    pool = request.app.state.submit_pool
    job = await fastsubmit.submit(pool, db, who, sub, idempotency_key) if pool is not None else None
    created = True
    if job is None:
        job, created = await run_in_threadpool(service.submit_keyed, db, who, sub, idempotency_key)
    # Serialized here, once: returning the model would make FastAPI validate it again against
    # `response_model` (which stays for the documentation) — the hottest route, so it counts.
    body = job_out(job).model_dump_json(by_alias=True).encode()
    if not created:
        return Response(body, status_code=200, media_type="application/json", headers={"Idempotent-Replayed": "true"})
    return Response(body, status_code=201, media_type="application/json")


@router.get("", response_model=JobList)
def list_jobs(
    who: PrincipalDep,
    db: DbDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs in these statuses (repeatable)")] = None,
    project: Annotated[str | None, Query(max_length=64, description="Only this project's jobs")] = None,
    user: Annotated[str | None, Query(max_length=64, description="Only this user's jobs")] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=64,
                                       description="Only jobs that asked for (or run on) this accelerator type")] = None,
    org: Annotated[str | None, Query(max_length=64, description="Only this org's jobs (center admins; others: their own)")] = None,
    since: Annotated[AwareDatetime | None, Query(description="Only jobs submitted at or after this time")] = None,
    sort: Annotated[JobSort, Query(description="id: newest first; submitted_at: latest first; priority: highest first "
                                   "(pending jobs; others after them)")] = JobSort.ID,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
) -> Response:
    """Jobs the caller may see, one page at a time. Pages are keyset pages: a walk through
    them while jobs are being submitted never repeats or skips a job that was there when it
    began (new jobs sort before the cursor)."""
    q = service.ListQuery(statuses=tuple(status or ()), project=project, user=user, accelerator_type=type_, org=org,
                          since=since, sort=sort, limit=limit, cursor=cursor)
    page = service.list_for(db, who, q)
    # Serialized once (see submit_job): a page is up to 500 jobs, and validating it again
    # against `response_model` doubled the route's time.
    listing = JobList(items=[job_out(j) for j in page.items], next_cursor=page.next_cursor)
    return Response(listing.model_dump_json(by_alias=True).encode(), media_type="application/json")


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, who: PrincipalDep, db: DbDep) -> JobOut:
    """One job: status and reason, priority factors and estimated start while pending, nodes
    and devices, price, settled cost and cost so far."""
    return job_out(service.get(db, who, job_id))


@router.get("/{job_id}/events", response_model=list[EventOut])
def job_events(job_id: JobId, who: PrincipalDep, db: DbDep) -> list[EventOut]:
    return [EventOut(at=e.at, from_status=e.from_status, to_status=e.to_status, reason=e.reason) for e in service.events(db, who, job_id)]


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: JobId, who: PrincipalDep, db: DbDep) -> JobOut:
    """PENDING or HELD → CANCELLED at once; a starting or running job → CANCELLING (stop
    signal, then SIGKILL after its grace period). 409 `job_finished` once it has ended."""
    return job_out(service.cancel(db, who, job_id))


@router.post("/{job_id}/hold", response_model=JobOut)
def hold_job(job_id: JobId, who: PrincipalDep, db: DbDep) -> JobOut:
    """Keep a pending job out of scheduling (PENDING → HELD) until released. Its owner, an
    admin of its org or a center admin. 409 `job_not_pending` for a job in any other status."""
    return job_out(service.hold(db, who, job_id))


@router.post("/{job_id}/release", response_model=JobOut)
def release_job(job_id: JobId, who: PrincipalDep, db: DbDep) -> JobOut:
    """HELD → PENDING, keeping its submit time (and so its age). 409 `job_not_held` otherwise."""
    return job_out(service.release(db, who, job_id))


@router.post("/{job_id}/requeue", response_model=JobOut)
def requeue_job(job_id: JobId, who: PrincipalDep, db: DbDep) -> JobOut:
    """Center admins: stop a starting or running job and put it back in the queue with its
    submit time (PREEMPTING now, PENDING once its process is gone; the time it ran is
    charged). 409: `job_finished` (FAILED, TIMEOUT, CANCELLED, …), `job_not_running`
    (PENDING, HELD), `job_stopping` (CANCELLING, PREEMPTING), `job_not_requeueable` (the job
    asked `requeue: false`)."""
    return job_out(service.requeue(db, who, job_id))


@router.get(
    "/{job_id}/logs",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Log bytes from `offset`; with `follow`, a stream"}},
)
def job_logs(
    job_id: JobId,
    request: Request,
    who: PrincipalDep,
    db: DbDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, le=2**40)] = 0,  # 1 TiB; seeking far past a file's end is an OSError
    limit: Annotated[int, Query(ge=1, le=8 * 1024 * 1024)] = 1024 * 1024,
    follow: Annotated[bool, Query(description="Stream new output until the job has ended (or the client leaves)")] = False,
    rank: Annotated[int | None, Query(ge=0, le=100_000, description="Only this rank's log (multi-node jobs)")] = None,
    cursor: Annotated[str | None, Query(max_length=200_000, description="Merged view: where to continue, as "
                                        "returned in X-Log-Cursor (one byte offset per rank)")] = None,
) -> Response:
    """The job's combined stdout and stderr. With `rank`, or for a single-node job, one
    rank's log from byte `offset`; `X-Log-Offset` is where to continue. Without `rank`, a
    multi-node job's ranks merged: every line prefixed `[rank N] `, new lines in rank order,
    continued with `cursor` = the `X-Log-Cursor` answered (whole lines only until the job has
    ended). `X-Log-Ranks` is the job's rank count; `X-Job-Status` tells a follower when to
    stop. With `follow=true` the answer is a stream (no `limit`) that ends when the job has
    ended and all its output was sent. 422 `bad_rank`, `bad_cursor`."""
    job = service.get(db, who, job_id)
    service.check_rank(job, rank)
    ranks = service.log_ranks(job)
    headers = {"X-Log-Ranks": str(ranks), "X-Job-Status": str(job.status)}
    if rank is not None or ranks == 1:
        one = rank or 0
        if follow:
            gen = service.follow_log(db, who, settings.jobs_dir, job_id, offset, request.is_disconnected, rank=one)
            return StreamingResponse(gen, media_type="text/plain; charset=utf-8",
                                     headers={"X-Accel-Buffering": "no", "X-Log-Ranks": str(ranks)})
        data, nxt = service.read_log(settings.jobs_dir, job_id, offset, limit, one)
        return Response(content=data, media_type="text/plain; charset=utf-8",
                        headers=headers | {"X-Log-Offset": str(nxt), "X-Log-Cursor": str(nxt)})
    if offset:
        raise invalid("offset_needs_rank", "offset pages one rank's log (give rank); the merged view pages by cursor",
                      "offset")
    at = service.parse_cursor(cursor, ranks)
    if follow:
        gen = service.follow_merged(db, who, settings.jobs_dir, job_id, at, request.is_disconnected)
        return StreamingResponse(gen, media_type="text/plain; charset=utf-8",
                                 headers={"X-Accel-Buffering": "no", "X-Log-Ranks": str(ranks),
                                          "X-Log-Cursor": ",".join(map(str, at))})
    data, nxt_cursor = service.read_merged(settings.jobs_dir, job_id, at, limit, job.status in TERMINAL)
    return Response(content=data, media_type="text/plain; charset=utf-8",
                    headers=headers | {"X-Log-Cursor": ",".join(map(str, nxt_cursor))})
