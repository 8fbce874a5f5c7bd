"""/v1/admin: the center admin's fair-share model (quotas, shares, priority classes,
projects); /v1/priority-classes for everyone.

Invariant: every /v1/admin route takes `AdminDep`, so anyone but a center admin gets 403
before the request body is even read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from api.auth import require
from api.deps import DbDep, PrincipalDep
from api.schemas.admin import (
    CLASS_NAME,
    PriorityClassIn,
    PriorityClassOut,
    ProjectIn,
    ProjectOut,
    QuotaIn,
    QuotaOut,
    ShareOut,
    SharesIn,
    class_out,
    project_out,
    quota_out,
    share_out,
)
from suanli import admin as service
from suanli.admin import Scope, ShareKind
from suanli.identity import Principal, Role


def center_admin(who: PrincipalDep) -> Principal:
    return require(who, Role.CENTER_ADMIN)


AdminDep = Annotated[Principal, Depends(center_admin)]
ClassName = Annotated[str, Path(pattern=CLASS_NAME, description="letters, digits, . _ - (at most 32)")]

router = APIRouter(prefix="/v1", tags=["admin"])


@router.put("/admin/quotas/{scope}/{name}/{accelerator_type}", response_model=QuotaOut)
def set_quota(scope: Scope, name: str, accelerator_type: str, body: QuotaIn, who: AdminDep, db: DbDep) -> QuotaOut:
    """Set an org's or pool's guarantee and limit for one accelerator type. Refused (409
    `guarantees_exceed_capacity`) when that scope's guarantees would total more devices of the
    type than registered, not drained servers hold."""
    return quota_out(service.set_quota(db, who, scope, name, accelerator_type, body.guaranteed, body.limit))


@router.delete("/admin/quotas/{scope}/{name}/{accelerator_type}", status_code=204, response_class=Response)
def delete_quota(scope: Scope, name: str, accelerator_type: str, who: AdminDep, db: DbDep) -> Response:
    """Remove a quota (nothing guaranteed, no limit)."""
    service.delete_quota(db, who, scope, name, accelerator_type)
    return Response(status_code=204)


@router.get("/admin/quotas", response_model=list[QuotaOut])
def list_quotas(who: AdminDep, db: DbDep) -> list[QuotaOut]:
    """Every quota, sorted by scope, name and accelerator type."""
    return [quota_out(q) for q in service.list_quotas(db, who)]


@router.put("/admin/shares/{kind}/{name:path}", response_model=ShareOut)
def set_shares(kind: ShareKind, name: str, body: SharesIn, who: AdminDep, db: DbDep) -> ShareOut:
    """Set the fair-share weight of a pool, an org, or a project (named `ORG/PROJECT`)."""
    return share_out(service.set_shares(db, who, kind, name, body.shares))


@router.get("/admin/shares", response_model=list[ShareOut])
def share_tree(who: AdminDep, db: DbDep) -> list[ShareOut]:
    """The tenancy tree below the center with each node's shares."""
    return [share_out(e) for e in service.share_tree(db, who)]


@router.put("/admin/priority-classes/{name}", response_model=PriorityClassOut)
def set_priority_class(name: ClassName, body: PriorityClassIn, who: AdminDep, db: DbDep) -> PriorityClassOut:
    """Create or replace a priority class."""
    return class_out(service.set_priority_class(db, who, name, body.value, body.preemptible, body.description))


@router.post("/admin/projects", response_model=ProjectOut, status_code=201)
def create_project(body: ProjectIn, who: AdminDep, db: DbDep) -> ProjectOut:
    """Create a project of an org (a leaf of the fair-share tree)."""
    return project_out(service.create_project(db, who, body.org, body.name))


@router.get("/priority-classes", response_model=list[PriorityClassOut])
def priority_classes(who: PrincipalDep, db: DbDep) -> list[PriorityClassOut]:
    """The priority classes a job may ask for (any signed-in user)."""
    return [class_out(c) for c in service.priority_classes(db, who)]
