"""Store: pools, orgs, projects, users, tokens, accelerator types and prices; quotas, shares
and priority classes.

Invariants: functions take an open session and never commit (the caller owns the unit of
work); lookups by name return None when absent; converters are the only row→domain path.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from quota.types import Price
from suanli.db.models import (
    AcceleratorTypeRow,
    AuditRow,
    NodeRow,
    OrgRow,
    PoolRow,
    PriceRow,
    PriorityClassRow,
    ProjectRow,
    QuotaRow,
    TokenRow,
    UserRow,
)
from suanli.identity import PREFIX_LEN, Principal, Role, hash_token
from scheduler.types import PriorityClass, Quota, Vendor

# `last_used_at` is refreshed at most this often per token.
LAST_USED_EVERY = timedelta(minutes=1)


def get_or_create_pool(s: Session, name: str, shares: int = 1) -> PoolRow:
    row = s.scalar(select(PoolRow).where(PoolRow.name == name))
    if row is None:
        row = PoolRow(name=name, shares=shares)
        s.add(row)
        s.flush()
    return row


def get_org(s: Session, name: str) -> OrgRow | None:
    return s.scalar(select(OrgRow).where(OrgRow.name == name))


def create_org(s: Session, name: str, pool: str, kind: str, now: datetime) -> OrgRow:
    row = OrgRow(name=name, pool_id=get_or_create_pool(s, pool).id, kind=kind, status="verified", shares=1, created_at=now)
    s.add(row)
    s.flush()
    s.add(ProjectRow(org_id=row.id, name="default"))
    s.flush()
    return row


def get_project(s: Session, org_id: int, name: str) -> ProjectRow | None:
    return s.scalar(select(ProjectRow).where(ProjectRow.org_id == org_id, ProjectRow.name == name))


def create_project(s: Session, org_id: int, name: str) -> ProjectRow:
    row = ProjectRow(org_id=org_id, name=name)
    s.add(row)
    s.flush()
    return row


def get_user(s: Session, name: str) -> UserRow | None:
    return s.scalar(select(UserRow).where(UserRow.name == name))


def create_user(s: Session, name: str, role: Role, org_id: int | None, now: datetime) -> UserRow:
    row = UserRow(name=name, role=str(role), org_id=org_id, created_at=now)
    s.add(row)
    s.flush()
    return row


def add_token(s: Session, user_id: int, token: str, now: datetime, name: str = "",
              expires_at: datetime | None = None) -> TokenRow:
    row = TokenRow(user_id=user_id, token_hash=hash_token(token), prefix=token[:PREFIX_LEN], name=name, created_at=now,
                   expires_at=expires_at)
    s.add(row)
    s.flush()
    return row


def principal_for_token(s: Session, token: str, now: datetime) -> Principal | None:
    """The principal owning a live token (unrevoked, unexpired, its user not disabled), or None
    (`token_principal` with the token's expiry)."""
    found = token_principal(s, token, now)
    return found[0] if found else None


def token_principal(s: Session, token: str, now: datetime) -> tuple[Principal, datetime | None] | None:
    """The principal owning a live token and the token's expiry, or None.

    The secret is never compared: it is hashed (SHA-256) and the row is found by equality on
    the unique index of hashes. How long that lookup takes can at most hint at the stored
    hashes, and learning a hash does not help anyone find a 256-bit secret that has it — so
    the lookup is as safe as a constant-time comparison (`tokens_equal`) without scanning.

    Marks the token used (`last_used_at`) when it was last marked a minute or more ago, so a
    busy token costs one small UPDATE a minute, not one per request."""
    row = s.execute(
        select(UserRow, OrgRow.name, TokenRow.id, TokenRow.expires_at, TokenRow.revoked_at, TokenRow.last_used_at)
        .join(TokenRow, TokenRow.user_id == UserRow.id)
        .outerjoin(OrgRow, OrgRow.id == UserRow.org_id)
        .where(TokenRow.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    user, org_name, token_id, expires_at, revoked_at, last_used_at = row
    if revoked_at is not None or (expires_at is not None and expires_at <= now) or user.disabled_at is not None:
        return None
    if last_used_at is None or now - last_used_at >= LAST_USED_EVERY:
        # Guarded in SQL too: of concurrent requests, the first one's write wins.
        s.execute(update(TokenRow).where(TokenRow.id == token_id,
                                         or_(TokenRow.last_used_at.is_(None), TokenRow.last_used_at <= now - LAST_USED_EVERY))
                  .values(last_used_at=now))
    return principal_from_row(user, org_name, token_id), expires_at


def principal_from_row(user: UserRow, org_name: str | None, token_id: int | None = None) -> Principal:
    return Principal(user.id, user.name, Role(user.role), user.org_id, org_name, user.node, token_id)


def ensure_accelerator_type(s: Session, name: str, vendor: Vendor, description: str = "") -> AcceleratorTypeRow:
    row = s.get(AcceleratorTypeRow, name)
    if row is None:
        row = AcceleratorTypeRow(name=name, vendor=str(vendor), description=description)
        s.add(row)
        s.flush()
    return row


def accelerator_vendors(s: Session) -> dict[str, Vendor]:
    return {r.name: Vendor(r.vendor) for r in s.scalars(select(AcceleratorTypeRow))}


def set_price(s: Session, accelerator_type: str, fen_per_device_hour: int, effective_from: datetime) -> PriceRow:
    row = PriceRow(accelerator_type=accelerator_type, fen_per_device_hour=fen_per_device_hour, effective_from=effective_from)
    s.add(row)
    s.flush()
    return row


def current_price(s: Session, accelerator_type: str, at: datetime) -> Price | None:
    """The price in effect at `at`: the latest one whose effective time has come."""
    row = s.scalar(
        select(PriceRow)
        .where(PriceRow.accelerator_type == accelerator_type, PriceRow.effective_from <= at)
        .order_by(PriceRow.effective_from.desc(), PriceRow.id.desc())
        .limit(1)
    )
    return price_from_row(row) if row else None


def priority_classes(s: Session) -> dict[str, PriorityClass]:
    return {r.name: PriorityClass(float(r.value), r.preemptible) for r in s.scalars(select(PriorityClassRow))}


def set_priority_class(s: Session, name: str, value: float, preemptible: bool, description: str = "") -> None:
    row = s.get(PriorityClassRow, name)
    if row is None:
        s.add(PriorityClassRow(name=name, value=Decimal(str(value)), preemptible=preemptible, description=description))
    else:
        row.value, row.preemptible = Decimal(str(value)), preemptible
        if description:
            row.description = description
    s.flush()


def quotas(s: Session) -> tuple[dict[tuple[str, str], Quota], dict[tuple[str, str], Quota]]:
    """(org quotas, pool quotas), each keyed by (name, accelerator type)."""
    orgs = dict(s.execute(select(OrgRow.id, OrgRow.name)).all())
    pools = dict(s.execute(select(PoolRow.id, PoolRow.name)).all())
    by_org: dict[tuple[str, str], Quota] = {}
    by_pool: dict[tuple[str, str], Quota] = {}
    for q in s.scalars(select(QuotaRow)):
        if q.scope == "org" and q.scope_id in orgs:
            by_org[(orgs[q.scope_id], q.accelerator_type)] = Quota(q.guaranteed, q.limit)
        elif q.scope == "pool" and q.scope_id in pools:
            by_pool[(pools[q.scope_id], q.accelerator_type)] = Quota(q.guaranteed, q.limit)
    return by_org, by_pool


def set_quota(s: Session, scope: str, scope_id: int, accelerator_type: str, guaranteed: int, limit: int | None) -> QuotaRow:
    row = s.scalar(select(QuotaRow).where(QuotaRow.scope == scope, QuotaRow.scope_id == scope_id,
                                          QuotaRow.accelerator_type == accelerator_type))
    if row is None:
        row = QuotaRow(scope=scope, scope_id=scope_id, accelerator_type=accelerator_type, guaranteed=guaranteed, limit=limit)
        s.add(row)
    else:
        row.guaranteed, row.limit = guaranteed, limit
    s.flush()
    return row


def current_prices(s: Session, at: datetime) -> dict[str, int]:
    """Every type's price in effect at `at`."""
    out: dict[str, int] = {}
    for row in s.scalars(select(PriceRow).where(PriceRow.effective_from <= at).order_by(PriceRow.effective_from, PriceRow.id)):
        out[row.accelerator_type] = row.fen_per_device_hour  # later rows win
    return out


def price_from_row(row: PriceRow) -> Price:
    return Price(row.accelerator_type, row.fen_per_device_hour, row.effective_from)


# ---------------------------------------------------------------------------- fair-share model
# Used by the center admin's service (`suanli.admin`). Lookups return None when absent.


def get_pool(s: Session, name: str) -> PoolRow | None:
    return s.scalar(select(PoolRow).where(PoolRow.name == name))


def lock_accelerator_type(s: Session, name: str) -> AcceleratorTypeRow | None:
    """The type's row, locked until commit (PostgreSQL `FOR UPDATE`; SQLite's `BEGIN
    IMMEDIATE` already serializes writers): quota changes of one type queue behind each other,
    so two concurrent guarantees cannot both pass the capacity check."""
    return s.scalar(select(AcceleratorTypeRow).where(AcceleratorTypeRow.name == name).with_for_update())


def get_quota(s: Session, scope: str, scope_id: int, accelerator_type: str) -> QuotaRow | None:
    return s.scalar(select(QuotaRow).where(QuotaRow.scope == scope, QuotaRow.scope_id == scope_id,
                                          QuotaRow.accelerator_type == accelerator_type))


def delete_quota(s: Session, scope: str, scope_id: int, accelerator_type: str) -> bool:
    """Remove the quota; False when there was none."""
    row = get_quota(s, scope, scope_id, accelerator_type)
    if row is None:
        return False
    s.delete(row)
    s.flush()
    return True


def quota_rows(s: Session) -> list[tuple[str, QuotaRow]]:
    """Every quota of an existing org or pool with that org's or pool's name, sorted by
    (scope, name, accelerator type)."""
    names = {
        "org": dict(s.execute(select(OrgRow.id, OrgRow.name)).all()),
        "pool": dict(s.execute(select(PoolRow.id, PoolRow.name)).all()),
    }
    out = [(names[q.scope][q.scope_id], q) for q in s.scalars(select(QuotaRow))
           if q.scope in names and q.scope_id in names[q.scope]]
    return sorted(out, key=lambda x: (x[1].scope, x[0], x[1].accelerator_type))


def promises(s: Session, accelerator_type: str) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """(pool guarantees by pool id, org guarantees by org id, pool id by org id) for a type."""
    pool_g: dict[int, int] = {}
    org_g: dict[int, int] = {}
    for q in s.scalars(select(QuotaRow).where(QuotaRow.accelerator_type == accelerator_type)):
        (pool_g if q.scope == "pool" else org_g)[q.scope_id] = q.guaranteed
    pool_of = dict(s.execute(select(OrgRow.id, OrgRow.pool_id)).all())
    return pool_g, org_g, pool_of


def capacity_by_type(s: Session) -> dict[str, int]:
    """Devices of each type on registered servers that are not drained."""
    rows = s.execute(select(NodeRow.accelerator_type, func.sum(NodeRow.device_count))
                     .where(NodeRow.status != "DRAINED").group_by(NodeRow.accelerator_type))
    return {t: int(n or 0) for t, n in rows}


def share_rows(s: Session) -> tuple[list[PoolRow], list[tuple[OrgRow, str]], list[tuple[ProjectRow, str]]]:
    """The tenancy tree: pools; orgs with their pool's name; projects with their org's name."""
    pools = list(s.scalars(select(PoolRow).order_by(PoolRow.name)))
    orgs = [(o, p) for o, p in s.execute(select(OrgRow, PoolRow.name).join(PoolRow, PoolRow.id == OrgRow.pool_id)
                                         .order_by(OrgRow.name))]
    projects = [(p, o) for p, o in s.execute(select(ProjectRow, OrgRow.name).join(OrgRow, OrgRow.id == ProjectRow.org_id)
                                             .order_by(OrgRow.name, ProjectRow.name))]
    return pools, orgs, projects


def priority_class_rows(s: Session) -> list[PriorityClassRow]:
    return list(s.scalars(select(PriorityClassRow).order_by(PriorityClassRow.name)))


def put_priority_class(s: Session, name: str, value: Decimal, preemptible: bool, description: str | None) -> PriorityClassRow:
    """Create or replace a class's value and preemptibility; `description=None` keeps the
    current description (empty for a new class)."""
    row = s.get(PriorityClassRow, name)
    if row is None:
        row = PriorityClassRow(name=name, value=value, preemptible=preemptible, description=description or "")
        s.add(row)
    else:
        row.value, row.preemptible = value, preemptible
        if description is not None:
            row.description = description
    s.flush()
    return row


# ---------------------------------------------------------------------------- accounts
# Used by the accounts service (`suanli.accounts`): orgs with their pools, price versions, the
# audit log's read side.


def org_rows(s: Session, kind: str | None = None, pool: str | None = None, status: str | None = None) -> list[tuple[OrgRow, str]]:
    """Orgs (with their pool's name) by name, optionally only those of a kind, pool or status."""
    q = select(OrgRow, PoolRow.name).join(PoolRow, PoolRow.id == OrgRow.pool_id)
    if kind is not None:
        q = q.where(OrgRow.kind == kind)
    if pool is not None:
        q = q.where(PoolRow.name == pool)
    if status is not None:
        q = q.where(OrgRow.status == status)
    return [(o, p) for o, p in s.execute(q.order_by(OrgRow.name))]


def price_rows(s: Session) -> list[PriceRow]:
    """Every price version, by type, then in the order they take effect (ties: later id wins)."""
    return list(s.scalars(select(PriceRow).order_by(PriceRow.accelerator_type, PriceRow.effective_from, PriceRow.id)))


def audit_log(s: Session, action: str | None, target: str | None, actor: str | None, since: datetime | None,
              limit: int) -> list[AuditRow]:
    """Audit rows matching every filter given (exact matches; `since` inclusive), newest first."""
    q = select(AuditRow)
    if action is not None:
        q = q.where(AuditRow.action == action)
    if target is not None:
        q = q.where(AuditRow.target == target)
    if actor is not None:
        q = q.where(AuditRow.actor == actor)
    if since is not None:
        q = q.where(AuditRow.at >= since)
    return list(s.scalars(q.order_by(AuditRow.id.desc()).limit(limit)))


# ---------------------------------------------------------------------------- identity
# Used by the identity service (`suanli.members`): members, tokens, pools, node agents.


def get_user_by_id(s: Session, user_id: int) -> UserRow | None:
    return s.get(UserRow, user_id)


def get_node_agent(s: Session, node: str) -> UserRow | None:
    """The agent user bound to `node`, if one was made."""
    return s.scalar(select(UserRow).where(UserRow.node == node))


def create_node_agent(s: Session, name: str, node: str, now: datetime) -> UserRow:
    row = UserRow(name=name, role=str(Role.AGENT), org_id=None, node=node, created_at=now)
    s.add(row)
    s.flush()
    return row


def get_token(s: Session, token_id: int) -> TokenRow | None:
    return s.get(TokenRow, token_id)


def token_rows(s: Session, user_id: int, live_at: datetime | None = None) -> list[TokenRow]:
    """A user's tokens, newest first; with `live_at`, only those unrevoked and unexpired then."""
    q = select(TokenRow).where(TokenRow.user_id == user_id)
    if live_at is not None:
        q = q.where(TokenRow.revoked_at.is_(None), or_(TokenRow.expires_at.is_(None), TokenRow.expires_at > live_at))
    return list(s.scalars(q.order_by(TokenRow.id.desc())))


def revoke_token(s: Session, token_id: int, now: datetime) -> bool:
    """Revoke the token unless it already is; False when it already was (a concurrent
    revocation loses here, so only one of them is audited)."""
    result = s.execute(update(TokenRow).where(TokenRow.id == token_id, TokenRow.revoked_at.is_(None)).values(revoked_at=now))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_tokens_of(s: Session, user_id: int, now: datetime) -> int:
    """Revoke every unrevoked token of the user; how many were revoked."""
    result = s.execute(update(TokenRow).where(TokenRow.user_id == user_id, TokenRow.revoked_at.is_(None))
                       .values(revoked_at=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def org_members(s: Session, org_id: int) -> list[UserRow]:
    """The org's users that were not removed, by name."""
    return list(s.scalars(select(UserRow).where(UserRow.org_id == org_id, UserRow.disabled_at.is_(None))
                          .order_by(UserRow.name)))


def count_org_admins(s: Session, org_id: int) -> int:
    """The org's org admins that were not removed."""
    return int(s.scalar(select(func.count()).select_from(UserRow).where(
        UserRow.org_id == org_id, UserRow.role == str(Role.ORG_ADMIN), UserRow.disabled_at.is_(None))) or 0)


def create_pool(s: Session, name: str, shares: int) -> PoolRow:
    row = PoolRow(name=name, shares=shares)
    s.add(row)
    s.flush()
    return row


def pools_with_org_counts(s: Session) -> list[tuple[PoolRow, int]]:
    """Every pool by name, with how many orgs it holds."""
    counts = dict(s.execute(select(OrgRow.pool_id, func.count()).group_by(OrgRow.pool_id)).all())
    return [(p, int(counts.get(p.id, 0))) for p in s.scalars(select(PoolRow).order_by(PoolRow.name))]
