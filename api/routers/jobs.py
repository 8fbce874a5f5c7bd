"""/v1/jobs: submit (JSON or YAML), list, get, events, cancel, logs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import DbDep, PrincipalDep, SettingsDep
from api.schemas.jobs import EventOut, JobList, JobOut, JobSpecIn, job_out, submission_from_spec
from api.validation import validation_error
from scheduler.types import JobStatus
from suanli import jobs as service
from suanli.errors import invalid

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

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


@router.post("", status_code=201, response_model=JobOut, openapi_extra=_SPEC_BODY)
async def submit_job(request: Request, who: PrincipalDep, db: DbDep, settings: SettingsDep) -> JobOut:
    """Submit a job. The body is a job spec as JSON, or as YAML with `Content-Type: application/yaml`."""
    data = parse_spec_body(await request.body(), request.headers.get("content-type", ""))
    if not isinstance(data, dict):
        raise invalid("invalid_spec", "the job spec must be a mapping of fields")
    try:
        spec = JobSpecIn.model_validate(data)
    except ValidationError as e:
        raise validation_error(e.errors(), "invalid_spec") from e
    sub = submission_from_spec(spec, settings.default_time_limit_s, settings.max_time_limit_s, settings.default_grace_s)
    return job_out(await run_in_threadpool(service.submit, db, who, sub))


@router.get("", response_model=JobList)
def list_jobs(
    who: PrincipalDep,
    db: DbDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs in these statuses")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, description="Page: jobs with a smaller id")] = None,
) -> JobList:
    jobs = service.list_for(db, who, status or [], limit, before_id)
    nxt = jobs[-1].id if len(jobs) == limit else None
    return JobList(jobs=[job_out(j) for j in jobs], next_before_id=nxt)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: int, who: PrincipalDep, db: DbDep) -> JobOut:
    return job_out(service.get(db, who, job_id))


@router.get("/{job_id}/events", response_model=list[EventOut])
def job_events(job_id: int, who: PrincipalDep, db: DbDep) -> list[EventOut]:
    return [EventOut(at=e.at, from_status=e.from_status, to_status=e.to_status, reason=e.reason) for e in service.events(db, who, job_id)]


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, who: PrincipalDep, db: DbDep) -> JobOut:
    return job_out(service.cancel(db, who, job_id))


@router.get(
    "/{job_id}/logs",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Log bytes from `offset`"}},
)
def job_logs(
    job_id: int,
    who: PrincipalDep,
    db: DbDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=8 * 1024 * 1024)] = 1024 * 1024,
) -> Response:
    """The job's combined stdout and stderr from byte `offset`. `X-Log-Offset` is where to
    continue; `X-Job-Status` tells a follower when to stop."""
    job = service.get(db, who, job_id)
    data, nxt = service.read_log(settings.jobs_dir, job_id, offset, limit)
    return Response(
        content=data,
        media_type="text/plain; charset=utf-8",
        headers={"X-Log-Offset": str(nxt), "X-Job-Status": str(job.status)},
    )
