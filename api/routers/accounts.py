"""/v1/admin: orgs (kind, pool, status), prices, credit limits and the audit log; /v1/prices
for everyone. Top-ups are `POST /v1/orgs/{org}/topups` (`api/routers/billing.py`).

Invariant: every /v1/admin route takes `AdminDep`, so anyone but a center admin gets 403
before the request body is even read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import DbDep, PrincipalDep
from api.routers.admin import AdminDep
from api.schemas.accounts import (
    AuditOut,
    CreditLimitIn,
    OrgIn,
    OrgOut,
    OrgStatusIn,
    PriceIn,
    PriceOut,
    PriceScheduleOut,
    audit_out,
    org_out,
    price_out,
    schedule_out,
)
from suanli import accounts as service
from suanli.accounts import AUDIT_MAX, OrgKind, OrgStatus

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post("/admin/orgs", response_model=OrgOut, status_code=201)
def create_org(body: OrgIn, who: AdminDep, db: DbDep) -> OrgOut:
    """Register an org in an existing pool, with its "default" project. It starts "applied"
    (may not submit jobs) unless `status` is "verified"."""
    return org_out(service.create_org(db, who, body.name, body.pool, body.kind, body.status))


@router.get("/admin/orgs", response_model=list[OrgOut])
def list_orgs(
    who: AdminDep,
    db: DbDep,
    kind: Annotated[OrgKind | None, Query(description="Only orgs of this kind")] = None,
    pool: Annotated[str | None, Query(description="Only orgs of this pool")] = None,
    status: Annotated[OrgStatus | None, Query(description="Only orgs with this status")] = None,
) -> list[OrgOut]:
    """Orgs by name, with kind, pool, status, account, holds and credit limit."""
    return [org_out(o) for o in service.list_orgs(db, who, kind, pool, status)]


@router.post("/admin/orgs/{org}/status", response_model=OrgOut)
def set_org_status(org: str, body: OrgStatusIn, who: AdminDep, db: DbDep) -> OrgOut:
    """Verify (applied → verified), suspend (verified → suspended) or reinstate (suspended →
    verified) an org; any other change is 409 `bad_org_transition`."""
    return org_out(service.set_org_status(db, who, org, body.status, body.reason))


@router.put("/admin/orgs/{org}/credit-limit", response_model=OrgOut)
def set_credit_limit(org: str, body: CreditLimitIn, who: AdminDep, db: DbDep) -> OrgOut:
    """How far below zero the org's account may go (not below what it owes already)."""
    return org_out(service.set_credit_limit(db, who, org, body.credit_limit_fen))


@router.put("/admin/prices/{accelerator_type}", response_model=PriceOut)
def set_price(accelerator_type: str, body: PriceIn, who: AdminDep, db: DbDep) -> PriceOut:
    """A new price version for a type, from `effective_from` (default now; never in the past).
    Running jobs keep the price they started with."""
    return price_out(service.set_price(db, who, accelerator_type, body.fen_per_device_hour, body.effective_from))


@router.get("/admin/audit", response_model=list[AuditOut])
def audit_log(
    who: AdminDep,
    db: DbDep,
    action: Annotated[str | None, Query(max_length=64, description="e.g. org.status, price.set, org.topup")] = None,
    target: Annotated[str | None, Query(max_length=200, description="e.g. org:city-university, price:ascend-910b")] = None,
    actor: Annotated[str | None, Query(max_length=64, description="Who made the change")] = None,
    since: Annotated[AwareDatetime | None, Query(description="Only changes at or after this time")] = None,
    limit: Annotated[int, Query(ge=1, le=AUDIT_MAX)] = 100,
) -> list[AuditOut]:
    """Admin changes, newest first (filters match exactly)."""
    return [audit_out(a) for a in service.audit_log(db, who, action, target, actor, since, limit)]


@router.get("/prices", response_model=list[PriceScheduleOut])
def prices(who: PrincipalDep, db: DbDep) -> list[PriceScheduleOut]:
    """Per accelerator type: the price in effect now and scheduled changes (any signed-in user)."""
    return [schedule_out(p) for p in service.prices(db, who)]
