"""Accounts service for center admins: orgs (kind, pool, status), prices, credit limits and
the audit log. Top-ups are `suanli.billing.top_up`.

Invariants:
- Only center admins change or list anything here (`forbidden` otherwise); any signed-in
  principal may read the prices, so researchers know what a job will cost.
- Each call is one transaction, and every check runs before the first write: bad input
  (unknown kind, pool, type or org; a duplicate name; a transition the status machine does
  not have; a price taking effect in the past) raises a `SuanliError` and writes nothing.
- Every change writes exactly one audit row (who, what, when, before/after) in the same
  transaction.
- Org status: applied → verified → suspended → verified. New orgs made here start
  "applied" unless the admin says "verified"; only verified orgs may submit jobs
  (`suanli.jobs.submit`).
- Prices are versions, never edited: a new price is a new row with the time it takes effect
  (now, or later). A job's price is fixed when it starts (`scheduler/loop.py`), so a new
  version changes nothing for running jobs. A price may not take effect earlier than
  `PAST_SLACK` ago: that would rewrite what past work should have cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from quota import service as quota
from quota.types import org_cash, org_hold
from suanli.db.engine import Database
from suanli.db.models import AuditRow, OrgRow, PriceRow
from suanli.db.store import billing as billing_store
from suanli.db.store import tenancy
from suanli.errors import conflict, forbidden, invalid, not_found
from suanli.identity import Principal, Role
from suanli.jobs import utcnow

# A price "from now" sent by a client whose clock is a little behind ours is still now.
PAST_SLACK = timedelta(minutes=1)
MAX_FEN = 10**13  # ¥100 billion: far above any real amount, far below BIGINT
AUDIT_MAX = 500


class OrgKind(StrEnum):
    UNIVERSITY = "university"
    RESEARCH_INSTITUTE = "research-institute"
    ENTERPRISE = "enterprise"
    SME = "sme"
    STARTUP = "startup"


class OrgStatus(StrEnum):
    APPLIED = "applied"  # registered, papers not yet checked: may not submit jobs
    VERIFIED = "verified"  # may submit jobs
    SUSPENDED = "suspended"  # no new jobs until reinstated (running jobs are left alone)


# Every allowed status change; anything else is `bad_org_transition`.
TRANSITIONS = {
    (OrgStatus.APPLIED, OrgStatus.VERIFIED),  # papers checked
    (OrgStatus.VERIFIED, OrgStatus.SUSPENDED),  # e.g. unpaid bills, misuse
    (OrgStatus.SUSPENDED, OrgStatus.VERIFIED),  # reinstated
}
INITIAL = (OrgStatus.APPLIED, OrgStatus.VERIFIED)  # a new org cannot start suspended


@dataclass(frozen=True)
class OrgEntry:
    name: str
    pool: str
    kind: str
    status: str
    credit_limit_fen: int
    balance_fen: int  # the account, not counting holds
    held_fen: int  # held for running jobs
    created_at: datetime


@dataclass(frozen=True)
class PriceEntry:
    accelerator_type: str
    fen_per_device_hour: int
    effective_from: datetime


@dataclass(frozen=True)
class PriceSchedule:
    """One type's price now (None: never priced) and the versions still to come, in order."""

    accelerator_type: str
    current: PriceEntry | None
    scheduled: tuple[PriceEntry, ...]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def price_from_row(row: PriceRow) -> PriceEntry:
    return PriceEntry(row.accelerator_type, row.fen_per_device_hour, row.effective_from)


def audit_from_row(row: AuditRow) -> AuditEntry:
    return AuditEntry(row.id, row.at, row.actor, row.action, row.target, row.before, row.after)


def _admin(who: Principal) -> None:
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"this needs the role {Role.CENTER_ADMIN.value}; you are {who.role.value}")


def _orgs(s, rows: list[tuple[OrgRow, str]]) -> list[OrgEntry]:  # type: ignore[no-untyped-def]
    """Orgs with their money, read in one query over the ledger."""
    money = billing_store.balances(s, [a for o, _ in rows for a in (org_cash(o.id), org_hold(o.id))])
    return [OrgEntry(o.name, pool, o.kind, o.status, o.credit_limit_fen, money[org_cash(o.id)], money[org_hold(o.id)],
                     o.created_at) for o, pool in rows]


def _org_entry(s, org: OrgRow) -> OrgEntry:  # type: ignore[no-untyped-def]
    pool = s.get(tenancy.PoolRow, org.pool_id)
    return _orgs(s, [(org, pool.name if pool else "")])[0]


def _org_target(name: str) -> str:
    return f"org:{name}"  # the audit target of an org, as `quota.service.set_credit_limit` writes it


# ---------------------------------------------------------------------------- orgs


def create_org(db: Database, who: Principal, name: str, pool: str, kind: str, status: str = OrgStatus.APPLIED) -> OrgEntry:
    """A new org of an existing pool, with its "default" project and an empty account."""
    _admin(who)
    if kind not in set(OrgKind):
        raise invalid("unknown_org_kind", f"unknown org kind {kind!r}; known: {', '.join(OrgKind)}", "kind")
    if status not in INITIAL:
        raise invalid("bad_org_status", f"a new org is {' or '.join(INITIAL)}, not {status!r}", "status")
    now = utcnow()
    try:
        with db.begin() as s:
            if tenancy.get_pool(s, pool) is None:
                known = ", ".join(p.name for p in tenancy.share_rows(s)[0]) or "none"
                raise invalid("unknown_pool", f"unknown pool {pool!r}; known: {known}", "pool")
            if tenancy.get_org(s, name) is not None:
                raise conflict("org_exists", f"an org named {name} exists already")
            row = tenancy.create_org(s, name, pool, str(kind), now)
            row.status = str(status)
            s.flush()
            billing_store.audit(s, who.user, "org.create", _org_target(name), None,
                                {"pool": pool, "kind": str(kind), "status": str(status)}, now)
            return _org_entry(s, row)
    except IntegrityError as e:  # created concurrently between our check and our insert
        raise conflict("org_exists", f"an org named {name} exists already") from e


def list_orgs(db: Database, who: Principal, kind: str | None = None, pool: str | None = None,
              status: str | None = None) -> list[OrgEntry]:
    """Every org (or those of a kind, pool, status) by name, with account, holds and credit."""
    _admin(who)
    with db.begin() as s:
        return _orgs(s, tenancy.org_rows(s, kind, pool, status))


def set_org_status(db: Database, who: Principal, org: str, status: str, reason: str = "") -> OrgEntry:
    """Move an org along `TRANSITIONS` (verify, suspend, reinstate)."""
    _admin(who)
    if status not in set(OrgStatus):
        raise invalid("bad_org_status", f"unknown org status {status!r}; known: {', '.join(OrgStatus)}", "status")
    now = utcnow()
    with db.begin() as s:
        found = tenancy.get_org(s, org)
        row = billing_store.lock_org(s, found.id) if found else None
        if row is None:
            raise not_found("org", org)
        before = row.status
        if (before, status) not in TRANSITIONS:
            allowed = ", ".join(t for f, t in sorted(TRANSITIONS) if f == before) or "none"
            raise conflict("bad_org_transition", f"org {org} is {before}; it cannot become {status} (from {before}: {allowed})")
        row.status = str(status)
        s.flush()
        billing_store.audit(s, who.user, "org.status", _org_target(row.name), {"status": before},
                            {"status": str(status), "reason": reason}, now)
        return _org_entry(s, row)


def set_credit_limit(db: Database, who: Principal, org: str, credit_limit_fen: int) -> OrgEntry:
    """How far below zero the org's account may go; not below what it owes already."""
    _admin(who)
    if isinstance(credit_limit_fen, bool) or not 0 <= credit_limit_fen <= MAX_FEN:
        raise invalid("bad_amount", f"a credit limit is a whole number of fen from 0 to {MAX_FEN}", "credit_limit_fen")
    now = utcnow()
    with db.begin() as s:
        row = tenancy.get_org(s, org)
        if row is None:
            raise not_found("org", org)
        quota.set_credit_limit(s, row, credit_limit_fen, who.user, now)  # checks, then writes and audits
        return _org_entry(s, row)


# ---------------------------------------------------------------------------- prices


def set_price(db: Database, who: Principal, accelerator_type: str, fen_per_device_hour: int,
              effective_from: datetime | None = None) -> PriceEntry:
    """A new price version for a type, in effect from `effective_from` (default now)."""
    _admin(who)
    if isinstance(fen_per_device_hour, bool) or not 0 < fen_per_device_hour <= MAX_FEN:
        raise invalid("bad_amount", f"a price is a whole number of fen per device-hour from 1 to {MAX_FEN}",
                      "fen_per_device_hour")
    now = utcnow()
    if effective_from is not None and effective_from.tzinfo is None:
        raise invalid("naive_time", "give effective_from with a time zone (e.g. 2026-07-01T00:00:00+08:00)", "effective_from")
    if effective_from is not None and effective_from < now - PAST_SLACK:
        raise invalid("effective_from_in_past",
                      f"a price cannot take effect in the past ({effective_from.isoformat()}); past work keeps its price",
                      "effective_from")
    at = effective_from or now
    with db.begin() as s:
        if tenancy.lock_accelerator_type(s, accelerator_type) is None:  # also serializes price changes of the type
            known = ", ".join(sorted(tenancy.accelerator_vendors(s))) or "none"
            raise invalid("unknown_accelerator_type", f"unknown accelerator type {accelerator_type}; known: {known}",
                          "accelerator_type")
        previous = tenancy.current_price(s, accelerator_type, at)
        row = tenancy.set_price(s, accelerator_type, fen_per_device_hour, at)
        billing_store.audit(
            s, who.user, "price.set", f"price:{accelerator_type}",
            {"fen_per_device_hour": previous.fen_per_device_hour, "effective_from": previous.effective_from.isoformat()}
            if previous else None,
            {"fen_per_device_hour": fen_per_device_hour, "effective_from": at.isoformat()}, now)
        return price_from_row(row)


def schedule(rows: list[PriceEntry], types: list[str], now: datetime) -> list[PriceSchedule]:
    """Per type (sorted): the latest version in effect at `now`, and later ones in order.
    `rows` are in the order they take effect (ties broken by creation: the later one wins)."""
    out = []
    for t in sorted(types):
        mine = [r for r in rows if r.accelerator_type == t]
        past = [r for r in mine if r.effective_from <= now]
        out.append(PriceSchedule(t, past[-1] if past else None, tuple(r for r in mine if r.effective_from > now)))
    return out


def prices(db: Database, who: Principal) -> list[PriceSchedule]:
    """Every accelerator type's price now and its scheduled changes (any signed-in user)."""
    del who
    now = utcnow()
    with db.begin() as s:
        rows = [price_from_row(r) for r in tenancy.price_rows(s)]
        types = list(tenancy.accelerator_vendors(s))
    return schedule(rows, types, now)


# ---------------------------------------------------------------------------- audit log


def audit_log(db: Database, who: Principal, action: str | None = None, target: str | None = None, actor: str | None = None,
              since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
    """Audit rows matching every filter given, newest first."""
    _admin(who)
    if not 1 <= limit <= AUDIT_MAX:
        raise invalid("invalid_request", f"limit is from 1 to {AUDIT_MAX}", "limit")
    if since is not None and since.tzinfo is None:
        raise invalid("naive_time", "give since with a time zone (e.g. 2026-07-01T00:00:00Z)", "since")
    with db.begin() as s:
        return [audit_from_row(r) for r in tenancy.audit_log(s, action, target, actor, since, limit)]
