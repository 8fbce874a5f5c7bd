"""Accounts requests and views: orgs (kind, pool, status), prices, credit limits, the audit log.

Invariants: requests refuse unknown fields; whole numbers are strict (`true` is not 1, `"16"`
is not 16, `1.0` is not 1) and bounded to what the columns hold; times must carry a zone.
Money is integer fen and is also shown as exact yuan strings (`yuan()`); `org_out`,
`price_out`, `schedule_out` and `audit_out` are the only ways from the accounts service's
entries (`suanli.accounts`) to these views.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.schemas.admin import NAME64
from api.schemas.billing import yuan
from suanli.accounts import MAX_FEN, AuditEntry, OrgEntry, OrgKind, OrgStatus, PriceEntry, PriceSchedule


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "lake-ai", "pool": "enterprises", "kind": "startup", "status": "applied"}]})
    name: str = Field(pattern=NAME64, description="letters, digits, . _ - (at most 64)")
    pool: str = Field(pattern=NAME64, description="An existing pool, e.g. universities")
    kind: OrgKind
    status: Literal["applied", "verified"] = Field("applied", description="applied until its papers are checked")


class OrgStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "suspended", "reason": "unpaid"}]})
    status: OrgStatus = Field(description="applied → verified → suspended → verified")
    reason: str = Field("", max_length=500, description="Written to the audit log")


class CreditLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"credit_limit_fen": 500000}]})
    credit_limit_fen: int = Field(strict=True, ge=0, le=MAX_FEN, description="How far below zero the account may go (fen)")


class OrgOut(BaseModel):
    name: str
    pool: str
    kind: str
    status: str
    credit_limit_fen: int
    credit_limit_yuan: str
    balance_fen: int = Field(description="The account, not counting what is held for running jobs")
    balance_yuan: str
    held_fen: int = Field(description="Held for running jobs")
    held_yuan: str
    created_at: datetime


def org_out(o: OrgEntry) -> OrgOut:
    return OrgOut(name=o.name, pool=o.pool, kind=o.kind, status=o.status, credit_limit_fen=o.credit_limit_fen,
                  credit_limit_yuan=yuan(o.credit_limit_fen), balance_fen=o.balance_fen, balance_yuan=yuan(o.balance_fen),
                  held_fen=o.held_fen, held_yuan=yuan(o.held_fen), created_at=o.created_at)


class PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"fen_per_device_hour": 1200, "effective_from": "2026-07-01T00:00:00+08:00"}]})
    fen_per_device_hour: int = Field(strict=True, gt=0, le=MAX_FEN, description="Fen per device-hour (¥12.00 = 1200)")
    effective_from: AwareDatetime | None = Field(None, description="When it takes effect (default now; not in the past)")


class PriceOut(BaseModel):
    accelerator_type: str
    fen_per_device_hour: int
    yuan_per_device_hour: str
    effective_from: datetime


def price_out(p: PriceEntry) -> PriceOut:
    return PriceOut(accelerator_type=p.accelerator_type, fen_per_device_hour=p.fen_per_device_hour,
                    yuan_per_device_hour=yuan(p.fen_per_device_hour), effective_from=p.effective_from)


class PriceScheduleOut(BaseModel):
    accelerator_type: str
    current: PriceOut | None = Field(description="In effect now (null: the type has no price yet)")
    scheduled: list[PriceOut] = Field(description="Versions still to take effect, in order")


def schedule_out(p: PriceSchedule) -> PriceScheduleOut:
    return PriceScheduleOut(accelerator_type=p.accelerator_type, current=price_out(p.current) if p.current else None,
                            scheduled=[price_out(x) for x in p.scheduled])


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def audit_out(a: AuditEntry) -> AuditOut:
    return AuditOut(id=a.id, at=a.at, actor=a.actor, action=a.action, target=a.target, before=a.before, after=a.after)
