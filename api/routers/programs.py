"""/v1/admin/programs and /v1/admin/vouchers: subsidy programs, voucher grants and
revocations (center admins only; members see their own vouchers in GET /v1/balance).

Invariant: every route takes `AdminDep`, so anyone but a center admin gets 403 before the
body is read; routes only parse, call `suanli.programs` and convert its entries.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import DbDep
from api.routers.admin import AdminDep
from api.schemas.programs import (
    AdminVoucherOut,
    ProgramIn,
    ProgramOut,
    RevocationOut,
    VoucherGrantIn,
    VoucherRevokeIn,
    program_out,
    revocation_out,
    voucher_out,
)
from suanli import programs as service

router = APIRouter(prefix="/v1", tags=["programs"])
VoucherId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/admin/programs", response_model=ProgramOut, status_code=201)
def create_program(body: ProgramIn, who: AdminDep, db: DbDep) -> ProgramOut:
    """Create a program and fund its budget. Refused: bad_amount, bad_rate, bad_window,
    bad_name, unknown_org_kind, unknown_accelerator_type (422); program_exists (409)."""
    return program_out(service.create_program(
        db, who, name=body.name, budget_fen=body.budget_fen, rate=body.rate, cap_per_org_year_fen=body.cap_per_org_year_fen,
        org_kinds=body.org_kinds, accelerator_types=body.accelerator_types, valid_from=body.valid_from,
        valid_until=body.valid_until))


@router.get("/admin/programs", response_model=list[ProgramOut])
def list_programs(who: AdminDep, db: DbDep) -> list[ProgramOut]:
    """Every program with its money: budget = left + outstanding + held + redeemed."""
    return [program_out(e) for e in service.list_programs(db, who)]


@router.get("/admin/programs/{name}", response_model=ProgramOut)
def get_program(name: str, who: AdminDep, db: DbDep) -> ProgramOut:
    return program_out(service.get_program(db, who, name))


@router.post("/admin/programs/{name}/vouchers", response_model=AdminVoucherOut, status_code=201)
def grant_voucher(name: str, body: VoucherGrantIn, who: AdminDep, db: DbDep) -> AdminVoucherOut:
    """Grant a voucher from the program. Refused: bad_amount, bad_window,
    outside_program_window (422); program_budget_exceeded, org_cap_exceeded,
    org_not_eligible, org_not_active, program_ended (409); program or org not found (404)."""
    return voucher_out(service.grant_voucher(db, who, program=name, org=body.org, face_fen=body.face_fen,
                                             valid_from=body.valid_from, expires_at=body.expires_at))


@router.get("/admin/vouchers", response_model=list[AdminVoucherOut])
def list_vouchers(who: AdminDep, db: DbDep, org: str | None = None, program: str | None = None,
                  active: Annotated[bool | None, Query(description="true: only active; false: only the others")] = None,
                  ) -> list[AdminVoucherOut]:
    return [voucher_out(e) for e in service.list_vouchers(db, who, org=org, program=program, active=active)]


@router.post("/admin/vouchers/{voucher_id}/revoke", response_model=RevocationOut)
def revoke_voucher(voucher_id: VoucherId, who: AdminDep, db: DbDep, body: VoucherRevokeIn | None = None) -> RevocationOut:
    """Revoke a voucher: what it has left goes back to the program; money held by running
    jobs stays held. Refused: voucher_revoked (409), voucher_not_found (404)."""
    return revocation_out(service.revoke_voucher(db, who, voucher_id, body.reason if body else ""))
