"""Subsidy programs and vouchers as the center admin sees them; requests to create a program,
grant and revoke a voucher.

Invariants: requests refuse unknown fields; amounts are integer fen (never float, never a
string); a rate is an exact decimal given as a string ("0.3") or a JSON number, parsed
through its text by the service (`suanli.programs.parse_rate`), never kept as a float;
times without a zone are UTC. Range rules with their own codes (bad_amount, bad_rate,
bad_window, unknown_org_kind, …) are the service's, so the API and Python callers get the
same answers. `program_out`, `voucher_out` and `revocation_out` are the only ways from the
service's entries to these views.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from suanli.programs import NAME_MAX, ProgramEntry, Revocation, VoucherEntry, VoucherStatus, rate_text


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
Fen = Annotated[StrictInt, Field(description="Integer fen (1 yuan = 100 fen)")]


class ProgramIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "2026 算力券 第一批", "budget_fen": 100_000_000, "rate": "0.3", "cap_per_org_year_fen": 20_000_000,
        "org_kinds": ["enterprise", "sme", "startup"], "accelerator_types": [], "valid_from": "2026-01-01",
        "valid_until": "2027-01-01"}]})
    name: StrictStr = Field(min_length=1, max_length=NAME_MAX, description="Unique; no '/'")
    budget_fen: Fen = Field(description="Total the funder puts in (> 0)")
    rate: StrictStr | StrictInt | StrictFloat = Field(
        description="Share of eligible costs vouchers pay, in (0, 1], at most 4 decimal places; a string like \"0.3\"")
    cap_per_org_year_fen: Fen | None = Field(None, description="Most granted to one org per calendar year (null: no cap)")
    org_kinds: list[StrictStr] = Field([], max_length=16, description="university, research-institute, enterprise, sme, "
                                       "startup; empty = all")
    accelerator_types: list[StrictStr] = Field([], max_length=64, description="Types vouchers pay for; empty = all")
    valid_from: UtcDateTime
    valid_until: UtcDateTime = Field(description="End (exclusive); vouchers must expire by then")


class ProgramOut(BaseModel):
    name: str
    budget_fen: int
    rate: str = Field(description="e.g. '0.3'")
    cap_per_org_year_fen: int | None
    org_kinds: list[str] = Field(description="Empty = all")
    accelerator_types: list[str] = Field(description="Empty = all")
    valid_from: datetime
    valid_until: datetime
    created_at: datetime
    vouchers: int = Field(description="Vouchers granted from it")
    granted_fen: int = Field(description="Face values granted")
    left_fen: int = Field(description="Budget not granted (or given back)")
    outstanding_fen: int = Field(description="What its vouchers still hold, not spent and not held")
    held_fen: int = Field(description="Voucher money held by running jobs")
    redeemed_fen: int = Field(description="What its vouchers paid for jobs (the subsidy), net of refunds")
    returned_fen: int = Field(description="Given back by revocation and expiry")


def program_out(e: ProgramEntry) -> ProgramOut:
    p, m = e.program, e.money
    return ProgramOut(name=p.name, budget_fen=p.budget_fen, rate=rate_text(p.rate), cap_per_org_year_fen=p.cap_per_org_year_fen,
                      org_kinds=sorted(p.org_kinds), accelerator_types=sorted(p.accelerator_types), valid_from=p.valid_from,
                      valid_until=p.valid_until, created_at=e.created_at, vouchers=e.vouchers, granted_fen=m.granted_fen,
                      left_fen=m.left_fen, outstanding_fen=m.outstanding_fen, held_fen=m.held_fen,
                      redeemed_fen=m.redeemed_fen, returned_fen=m.returned_fen)


class VoucherGrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "org": "nova-robotics", "face_fen": 5_000_000, "expires_at": "2026-12-31"}]})
    org: StrictStr = Field(min_length=1, max_length=64)
    face_fen: Fen = Field(description="Face value (> 0)")
    valid_from: UtcDateTime | None = Field(None, description="Default: now (or the program's start, if later)")
    expires_at: UtcDateTime = Field(description="End (exclusive); within the program's window")


class VoucherRevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "org left the program"}]})
    reason: StrictStr = Field("", max_length=500, description="Written to the audit log")


class AdminVoucherOut(BaseModel):
    id: int
    program: str
    org: str
    face_fen: int
    remaining_fen: int = Field(description="What it can still pay")
    held_fen: int = Field(description="Held for running jobs")
    valid_from: datetime
    expires_at: datetime
    revoked_at: datetime | None
    status: VoucherStatus = Field(description="active, expired, revoked, used_up (nothing left, nothing held)")


def voucher_out(e: VoucherEntry) -> AdminVoucherOut:
    v = e.voucher
    return AdminVoucherOut(id=v.id, program=e.program, org=e.org, face_fen=v.face_fen, remaining_fen=e.remaining_fen,
                           held_fen=e.held_fen, valid_from=v.valid_from, expires_at=v.expires_at, revoked_at=v.revoked_at,
                           status=e.status)


class RevocationOut(AdminVoucherOut):
    returned_fen: int = Field(description="What went back to the program now; held money stays held")


def revocation_out(r: Revocation) -> RevocationOut:
    return RevocationOut(**voucher_out(r.voucher).model_dump(), returned_fen=r.returned_fen)
