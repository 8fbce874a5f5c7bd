"""Billing service for the API: balances and top-ups, with visibility rules."""

from __future__ import annotations

from quota import service as quota
from quota.types import Balance
from suanli.db.engine import Database
from suanli.db.store import tenancy
from suanli.errors import invalid, not_found
from suanli.identity import Principal
from suanli.jobs import utcnow


def _org_for(s, who: Principal, org: str | None) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    if org is None or org == who.org:
        if who.org_id is None or who.org is None:
            raise invalid("org_required", "name the org (?org=NAME)", "org")
        return who.org_id, who.org
    row = tenancy.get_org(s, org)
    if row is None or not who.can_see_org(row.id):
        raise not_found("org", org)
    return row.id, row.name


def balance(db: Database, who: Principal, org: str | None, recent: int = 10) -> Balance:
    with db.begin() as s:
        org_id, name = _org_for(s, who, org)
        return quota.balance(s, org_id, name, recent, utcnow())


def top_up(db: Database, who: Principal, org: str, amount_fen: int, key: str, memo: str) -> Balance:
    with db.begin() as s:
        org_id, name = _org_for(s, who, org)
        quota.top_up(s, org_id, amount_fen, f"topup:{key}", memo or f"top-up by {who.user}", utcnow())
    return balance(db, who, org)
