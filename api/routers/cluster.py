"""Cluster routes: drain and undrain servers (center admins), the queue overview (anyone
signed in), usage over time (members: their org; center admins: all), and `/readyz` (no
token: for load balancers and Kubernetes probes).

Invariants: every /v1/admin route takes `AdminDep`, so anyone but a center admin gets 403
before the body is read; `/readyz` answers 200 only when the database answers and the
scheduler lease is fresh, else 503 problem+json `not_ready` naming each failed check.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from api.deps import DbDep, PrincipalDep, SettingsDep
from api.routers.admin import AdminDep
from api.schemas.cluster import QueueOut, ReadyOut, UsageOut, queue_out, ready_out, usage_out
from api.schemas.common import Problem
from api.schemas.nodes import DrainIn, NodeOut, node_out
from suanli import cluster_views
from suanli import nodes as node_service
from suanli.cluster_views import GroupBy, Step
from suanli.jobs import utcnow

router = APIRouter(prefix="", tags=["cluster"])


@router.post("/v1/admin/nodes/{name}/drain", response_model=NodeOut)
def drain_node(name: str, body: DrainIn, who: AdminDep, db: DbDep, settings: SettingsDep) -> NodeOut:
    """No new jobs on the server; running ones continue (DRAINING, then DRAINED when the last
    ends). The reason, who and when are shown with the node and written to the audit log.
    409 `node_drained` if it is drained already."""
    return node_out(node_service.drain(db, who, name, body.reason, settings.node_heartbeat_timeout_s))


@router.post("/v1/admin/nodes/{name}/undrain", response_model=NodeOut)
def undrain_node(name: str, who: AdminDep, db: DbDep, settings: SettingsDep) -> NodeOut:
    """The server takes new jobs again. 409 `node_not_drained` if it is not drained."""
    return node_out(node_service.undrain(db, who, name, settings.node_heartbeat_timeout_s))


@router.get("/v1/queue", response_model=QueueOut)
def queue(who: PrincipalDep, db: DbDep) -> QueueOut:
    """Pending jobs by org and accepted types (devices asked, oldest wait, median estimated
    wait) and jobs holding devices by org and type. Other orgs than yours are folded into one
    group per type (org null); center admins see every org."""
    return queue_out(cluster_views.queue(db, who, utcnow()))


@router.get("/v1/usage", response_model=UsageOut, response_model_by_alias=True)
def usage(
    who: PrincipalDep,
    db: DbDep,
    settings: SettingsDep,
    group_by: Annotated[GroupBy, Query(description="Group the runs by org, pool or accelerator type")] = GroupBy.ORG,
    from_: Annotated[AwareDatetime | None, Query(alias="from", description="Window start (default: to - 1 day by hour, "
                                                                            "to - 30 days by day)")] = None,
    to: Annotated[AwareDatetime | None, Query(description="Window end, excluded (default now)")] = None,
    step: Annotated[Step, Query(description="Calendar hours or days of the billing time zone")] = Step.DAY,
) -> UsageOut:
    """Settled runs, device-hours and cost per bucket and group; members see their org only.
    A run counts where it was settled, as in statements. At most 31 days by hour, 366 by day
    (422 `window_too_long`); `from` must be before `to` (422 `bad_window`)."""
    return usage_out(cluster_views.usage(db, who, settings.billing_timezone, group_by, from_, to, step, utcnow()))


@router.get("/readyz", tags=["ops"], response_model=ReadyOut,
            responses={503: {"model": Problem, "description": "Not ready (`not_ready`); `errors` name the failed checks",
                             "content": {"application/problem+json": {}}}})
def readyz(db: DbDep, settings: SettingsDep) -> ReadyOut | JSONResponse:
    """Ready to serve: the database answers and the scheduler renewed its lease within
    `scheduler_lease_timeout_s`. No token needed."""
    r = cluster_views.readiness(db, utcnow(), settings.scheduler_lease_timeout_s)
    if r.ready:
        return ready_out(r)
    failed = [c for c in r.checks if not c.ok]
    body = Problem(type="https://suanli.dev/problems/not_ready", title="Service Unavailable", status=503,
                   detail="; ".join(f"{c.name}: {c.detail}" for c in failed), code="not_ready",
                   errors=[{"field": c.name, "message": c.detail} for c in failed])  # type: ignore[list-item]
    return JSONResponse(body.model_dump(), status_code=503, media_type="application/problem+json")
