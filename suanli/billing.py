"""Billing service for the API: balances and top-ups, with visibility rules.

Invariants: a top-up is posted once per key; the posting writes one audit row ("org.topup",
the account before and after) in the same transaction, and a replay of the key writes
nothing (neither ledger nor audit) and answers the balance as it is.
"""

from __future__ import annotations

from quota import service as quota
from quota.types import Balance
from suanli.db.engine import Database
from suanli.db.store import billing as billing_store
from suanli.db.store import tenancy
from suanli.errors import forbidden, invalid, not_found
from suanli.identity import Principal, Role
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
    """Credit an org's account (center admins); the same `key` credits once."""
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"this needs the role {Role.CENTER_ADMIN.value}; you are {who.role.value}")
    if isinstance(amount_fen, bool) or amount_fen <= 0:
        raise invalid("bad_amount", "a top-up is a positive number of fen", "amount_fen")
    now = utcnow()
    with db.begin() as s:
        org_id, name = _org_for(s, who, org)
        billing_store.lock_org(s, org_id)  # before/after below are exact: no settlement runs in between
        before, _ = billing_store.org_money(s, org_id)
        if quota.top_up(s, org_id, amount_fen, f"topup:{key}", memo or f"top-up by {who.user}", now):
            billing_store.audit(s, who.user, "org.topup", f"org:{name}", {"balance_fen": before},
                                {"balance_fen": before + amount_fen, "amount_fen": amount_fen, "key": key}, now)
    return balance(db, who, org)
