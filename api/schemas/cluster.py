"""Views of the queue overview, usage over time and readiness.

Invariants: `queue_out`, `usage_out` and `ready_out` are the only ways from the cluster
views' entries (`suanli.cluster_views`) to these schemas; money is integer fen with an exact
yuan string beside it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.billing import yuan
from suanli.cluster_views import QueueOverview, Readiness, UsageReport


class PendingGroupOut(BaseModel):
    org: str | None = Field(description="None: other orgs, folded together (only center admins see their names)")
    accelerator_types: str = Field(description="The types the jobs accept, in order of preference: a|b")
    jobs: int
    devices: float = Field(description="Devices asked, fractional shares as fractions")
    oldest_submitted_at: datetime
    oldest_wait_s: float
    estimated_jobs: int = Field(description="Jobs with an estimated start (the scheduler estimates the first few)")
    median_estimated_wait_s: float | None = Field(description="Median of (estimated start - now) over those jobs")


class ActiveGroupOut(BaseModel):
    org: str | None
    accelerator_type: str
    jobs: int = Field(description="Jobs holding devices (starting, running, being stopped)")
    devices: float


class QueueOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "as_of": "2026-11-29T08:00:00Z", "pending_jobs": 5, "pending_devices": 24.0, "running_jobs": 3, "running_devices": 16.0,
        "pending": [{"org": "city-university", "accelerator_types": "nvidia-a100-80g", "jobs": 2, "devices": 16.0,
                     "oldest_submitted_at": "2026-11-29T07:00:00Z", "oldest_wait_s": 3600.0, "estimated_jobs": 1,
                     "median_estimated_wait_s": 1800.0},
                    {"org": None, "accelerator_types": "ascend-910b", "jobs": 3, "devices": 8.0,
                     "oldest_submitted_at": "2026-11-29T07:30:00Z", "oldest_wait_s": 1800.0, "estimated_jobs": 0,
                     "median_estimated_wait_s": None}],
        "running": [{"org": None, "accelerator_type": "nvidia-a100-80g", "jobs": 3, "devices": 16.0}]}]})
    as_of: datetime
    pending_jobs: int
    pending_devices: float
    running_jobs: int
    running_devices: float
    pending: list[PendingGroupOut]
    running: list[ActiveGroupOut]


def queue_out(q: QueueOverview) -> QueueOut:
    return QueueOut(
        as_of=q.as_of, pending_jobs=q.pending_jobs, pending_devices=round(sum(g.devices for g in q.pending), 3),
        running_jobs=q.running_jobs, running_devices=round(sum(g.devices for g in q.running), 3),
        pending=[PendingGroupOut(org=g.org, accelerator_types=g.accelerator_types, jobs=g.jobs, devices=g.devices,
                                 oldest_submitted_at=g.oldest_submitted_at, oldest_wait_s=g.oldest_wait_s,
                                 estimated_jobs=g.estimated_jobs, median_estimated_wait_s=g.median_estimated_wait_s)
                 for g in q.pending],
        running=[ActiveGroupOut(org=g.org, accelerator_type=g.accelerator_type, jobs=g.jobs, devices=g.devices)
                 for g in q.running],
    )


class UsagePointOut(BaseModel):
    start: datetime = Field(description="Bucket start in the billing time zone (the first is cut to `from`)")
    end: datetime = Field(description="Bucket end (the last is cut to `to`)")
    group: str
    runs: int = Field(description="Runs settled in the bucket")
    device_hours: float
    cost_fen: int
    cost_yuan: str


class UsageTotalOut(BaseModel):
    group: str
    runs: int
    device_hours: float
    cost_fen: int
    cost_yuan: str


class UsageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "group_by": "org", "step": "day", "timezone": "Asia/Shanghai",
        "from": "2026-11-01T00:00:00+08:00", "to": "2026-11-03T00:00:00+08:00",
        "points": [{"start": "2026-11-01T00:00:00+08:00", "end": "2026-11-02T00:00:00+08:00", "group": "city-university",
                    "runs": 3, "device_hours": 48.0, "cost_fen": 57600, "cost_yuan": "576.00"}],
        "totals": [{"group": "city-university", "runs": 3, "device_hours": 48.0, "cost_fen": 57600, "cost_yuan": "576.00"}]}]},
        populate_by_name=True)
    group_by: str
    step: str
    timezone: str = Field(description="The billing time zone the buckets follow")
    from_: datetime = Field(alias="from")
    to: datetime
    points: list[UsagePointOut] = Field(description="Buckets with settled runs, by start then group (empty ones left out)")
    totals: list[UsageTotalOut]


def usage_out(u: UsageReport) -> UsageOut:
    return UsageOut(
        group_by=u.group_by, step=u.step, timezone=u.timezone, from_=u.start, to=u.end,
        points=[UsagePointOut(start=p.start, end=p.end, group=p.group, runs=p.runs, device_hours=p.device_hours,
                              cost_fen=p.cost_fen, cost_yuan=yuan(p.cost_fen)) for p in u.points],
        totals=[UsageTotalOut(group=t.group, runs=t.runs, device_hours=t.device_hours, cost_fen=t.cost_fen,
                              cost_yuan=yuan(t.cost_fen)) for t in u.totals],
    )


class CheckOut(BaseModel):
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ready", "checks": {"database": {"ok": True, "detail": "ok"},
                                      "scheduler_lease": {"ok": True, "detail": "renewed 2.1s ago by host-1:4242"}},
        "scheduler": "host-1:4242", "lease_renewed_at": "2026-11-29T08:00:00Z"}]})
    status: str = Field(description="ready (503 problem+json `not_ready` otherwise)")
    checks: dict[str, CheckOut]
    scheduler: str | None = Field(description="Who renewed the scheduler lease last (host:pid)")
    lease_renewed_at: datetime | None


def ready_out(r: Readiness) -> ReadyOut:
    return ReadyOut(status="ready" if r.ready else "not_ready", checks={c.name: CheckOut(ok=c.ok, detail=c.detail) for c in r.checks},
                    scheduler=r.holder, lease_renewed_at=r.renewed_at)
