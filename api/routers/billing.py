"""/v1/balance and top-ups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbDep, PrincipalDep
from api.routers.admin import AdminDep
from api.schemas.billing import BalanceOut, TopUpIn, balance_out
from suanli import billing as service

router = APIRouter(prefix="/v1", tags=["billing"])


@router.get("/balance", response_model=BalanceOut)
def get_balance(
    who: PrincipalDep,
    db: DbDep,
    org: Annotated[str | None, Query(description="Center admins: whose balance")] = None,
    recent: Annotated[int, Query(ge=0, le=200)] = 10,
) -> BalanceOut:
    """The org's prepaid balance and its latest ledger transactions."""
    return balance_out(service.balance(db, who, org, recent))


@router.post("/orgs/{org}/topups", response_model=BalanceOut, status_code=201)
def top_up(org: str, body: TopUpIn, who: AdminDep, db: DbDep) -> BalanceOut:
    """Credit an org's account (center admins). The same `key` credits once."""
    # AdminDep, not a check in here: others get 403 before the body is validated.
    return balance_out(service.top_up(db, who, org, body.amount_fen, body.key, body.memo))
