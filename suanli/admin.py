"""Center-admin service: the fair-share model — quotas, shares, priority classes, projects.

Invariants:
- Only center admins change anything here (`forbidden` otherwise); any signed-in principal
  may read the priority classes, so researchers know what they can ask for.
- Each call is one transaction, and every check runs before the first write: bad input
  (unknown org, pool, type or class; a limit below its guarantee; guarantees beyond
  capacity) raises a `SuanliError` and changes nothing.
- Guarantees are promises the reclaim mechanism must be able to keep: the sum of every org's
  (and, separately, every pool's) guarantee for a type never grows past the devices of that
  type on registered servers that are not drained. A change that does not raise a guarantee
  is always accepted, so an admin can still lower guarantees after servers were drained.
  Quota changes of one type are serialized by a lock on the type's row, so two concurrent
  guarantees cannot both slip under the capacity.
- Shares are the raw weights of the tenancy tree (pool → org → project); 0 means "never ahead
  of its siblings" (see `scheduler/policy/fairshare.py`). Only ratios among siblings matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from sqlalchemy.exc import IntegrityError

from suanli.db.engine import Database
from suanli.db.models import PoolRow, PriorityClassRow, QuotaRow
from suanli.db.store import tenancy
from suanli.errors import conflict, forbidden, invalid, not_found
from suanli.identity import Principal, Role

VALUE_PLACES = 4  # priority_classes.value is NUMERIC(6, 4)


class Scope(StrEnum):
    """Who a quota belongs to."""

    ORG = "org"
    POOL = "pool"


class ShareKind(StrEnum):
    """A node of the tenancy tree below the center."""

    POOL = "pool"
    ORG = "org"
    PROJECT = "project"  # named ORG/PROJECT


@dataclass(frozen=True)
class QuotaEntry:
    scope: Scope
    name: str  # the org's or pool's name
    accelerator_type: str
    guaranteed: int
    limit: int | None  # None: no limit


@dataclass(frozen=True)
class ShareEntry:
    kind: ShareKind
    name: str  # pool, org, or ORG/PROJECT
    parent: str | None  # a pool's parent is the center (None); an org's its pool; a project's its org
    shares: int


@dataclass(frozen=True)
class ClassEntry:
    name: str
    value: Decimal  # the QOS factor in [0, 1]
    preemptible: bool
    description: str


@dataclass(frozen=True)
class ProjectEntry:
    org: str
    name: str
    shares: int


def quota_from_row(name: str, row: QuotaRow) -> QuotaEntry:
    return QuotaEntry(Scope(row.scope), name, row.accelerator_type, row.guaranteed, row.limit)


def class_from_row(row: PriorityClassRow) -> ClassEntry:
    return ClassEntry(row.name, Decimal(row.value), row.preemptible, row.description or "")


def _admin(who: Principal) -> None:
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"this needs the role {Role.CENTER_ADMIN.value}; you are {who.role.value}")


def _scope_id(s, scope: Scope, name: str) -> int:  # type: ignore[no-untyped-def]
    row = tenancy.get_org(s, name) if scope is Scope.ORG else tenancy.get_pool(s, name)
    if row is None:
        raise not_found(scope.value, name)
    return row.id


# ---------------------------------------------------------------------------- quotas


def promised(pool_g: dict[int, int], org_g: dict[int, int], pool_of: dict[int, int], scope: Scope, scope_id: int,
             guaranteed: int, capacity: int) -> tuple[int, int]:
    """(devices promised with this change, the most this scope could be guaranteed).

    A pool promises max(its own guarantee, the sum of its orgs' guarantees): a pool
    guarantee bounds its orgs together, and orgs may be promised more than their pool was.
    The total over pools must not exceed the capacity, or reclaim could not keep them all."""
    pool_g, org_g = dict(pool_g), dict(org_g)
    (org_g if scope is Scope.ORG else pool_g)[scope_id] = guaranteed
    sums: dict[int, int] = {}
    for org_id, g in org_g.items():
        sums[pool_of[org_id]] = sums.get(pool_of[org_id], 0) + g
    pools = set(pool_g) | set(sums)
    per_pool = {p: max(pool_g.get(p, 0), sums.get(p, 0)) for p in pools}
    total = sum(per_pool.values())
    home = pool_of[scope_id] if scope is Scope.ORG else scope_id
    rest = total - per_pool.get(home, 0)
    if scope is Scope.ORG:
        others = sums.get(home, 0) - guaranteed
        most = capacity - rest - others if rest + pool_g.get(home, 0) <= capacity else 0
    else:
        most = capacity - rest if rest + sums.get(home, 0) <= capacity else 0
    return total, max(most, 0)



def set_quota(db: Database, who: Principal, scope: Scope, name: str, accelerator_type: str,
              guaranteed: int, limit: int | None) -> QuotaEntry:
    """Create or replace the quota of an org or pool for one accelerator type."""
    _admin(who)
    if guaranteed < 0:
        raise invalid("invalid_request", "guaranteed must be >= 0", "guaranteed")
    if limit is not None and limit < guaranteed:
        raise invalid("limit_below_guarantee",
                      f"the limit ({limit}) is below the guarantee ({guaranteed}); use a limit >= {guaranteed} or none", "limit")
    with db.begin() as s:
        scope_id = _scope_id(s, scope, name)
        if tenancy.lock_accelerator_type(s, accelerator_type) is None:
            known = ", ".join(sorted(tenancy.accelerator_vendors(s))) or "none"
            raise invalid("unknown_accelerator_type", f"unknown accelerator type {accelerator_type}; known: {known}",
                          "accelerator_type")
        current = tenancy.get_quota(s, scope.value, scope_id, accelerator_type)
        before = current.guaranteed if current else 0
        capacity = tenancy.capacity_by_type(s).get(accelerator_type, 0)
        pool_g, org_g, pool_of = tenancy.promises(s, accelerator_type)
        total, most = promised(pool_g, org_g, pool_of, scope, scope_id, guaranteed, capacity)
        if guaranteed > before and total > capacity:
            raise conflict(
                "guarantees_exceed_capacity",
                f"guarantees for {accelerator_type} would promise {total} devices (each pool promises the larger of "
                f"its own guarantee and the sum of its orgs'), but only {capacity} are registered on servers that "
                f"are not drained; guarantees are promises that reclaim must be able to keep, so {scope.value} {name} "
                f"can be guaranteed at most {max(most, before)} (it has {before})",
            )
        row = tenancy.set_quota(s, scope.value, scope_id, accelerator_type, guaranteed, limit)
        return quota_from_row(name, row)


def delete_quota(db: Database, who: Principal, scope: Scope, name: str, accelerator_type: str) -> None:
    """Remove a quota: nothing guaranteed, no limit."""
    _admin(who)
    with db.begin() as s:
        scope_id = _scope_id(s, scope, name)
        if not tenancy.delete_quota(s, scope.value, scope_id, accelerator_type):
            raise not_found("quota", f"{scope.value} {name} {accelerator_type}")


def list_quotas(db: Database, who: Principal) -> list[QuotaEntry]:
    """Every quota, sorted by (scope, name, accelerator type)."""
    _admin(who)
    with db.begin() as s:
        return [quota_from_row(name, row) for name, row in tenancy.quota_rows(s)]


# ---------------------------------------------------------------------------- shares


def set_shares(db: Database, who: Principal, kind: ShareKind, name: str, shares: int) -> ShareEntry:
    """Set the raw fair-share weight of a pool, an org, or a project (`ORG/PROJECT`)."""
    _admin(who)
    if shares < 0:
        raise invalid("invalid_request", "shares must be >= 0", "shares")
    with db.begin() as s:
        if kind is ShareKind.POOL:
            pool = tenancy.get_pool(s, name)
            if pool is None:
                raise not_found("pool", name)
            pool.shares = shares
            s.flush()
            return ShareEntry(kind, pool.name, None, shares)
        if kind is ShareKind.ORG:
            org = tenancy.get_org(s, name)
            if org is None:
                raise not_found("org", name)
            pool = s.get(PoolRow, org.pool_id)
            org.shares = shares
            s.flush()
            return ShareEntry(kind, org.name, pool.name if pool else None, shares)
        org_name, sep, project_name = name.partition("/")
        if not sep or not org_name or not project_name:
            raise invalid("bad_project_name", f"name a project as ORG/PROJECT, not {name!r}", "name")
        org = tenancy.get_org(s, org_name)
        project = tenancy.get_project(s, org.id, project_name) if org else None
        if org is None or project is None:
            raise not_found("project", name)
        project.shares = shares
        s.flush()
        return ShareEntry(kind, f"{org.name}/{project.name}", org.name, shares)


def share_tree(db: Database, who: Principal) -> list[ShareEntry]:
    """The whole tenancy tree below the center: pools, then orgs, then projects, by name."""
    _admin(who)
    with db.begin() as s:
        pools, orgs, projects = tenancy.share_rows(s)
    return (
        [ShareEntry(ShareKind.POOL, p.name, None, p.shares) for p in pools]
        + [ShareEntry(ShareKind.ORG, o.name, pool, o.shares) for o, pool in orgs]
        + [ShareEntry(ShareKind.PROJECT, f"{org}/{p.name}", org, p.shares) for p, org in projects]
    )


# ---------------------------------------------------------------------------- priority classes


def set_priority_class(db: Database, who: Principal, name: str, value: float, preemptible: bool,
                       description: str | None) -> ClassEntry:
    """Create or replace a priority class (`description=None` keeps the current one)."""
    _admin(who)
    exact = Decimal(str(value))
    if not (Decimal(0) <= exact <= Decimal(1)):
        raise invalid("invalid_request", "value must be between 0 and 1", "value")
    if exact.as_tuple().exponent < -VALUE_PLACES:  # type: ignore[operator]
        raise invalid("invalid_request", f"value has at most {VALUE_PLACES} decimal places", "value")
    try:
        with db.begin() as s:
            return class_from_row(tenancy.put_priority_class(s, name, exact, preemptible, description))
    except IntegrityError as e:  # the same new class created concurrently
        raise conflict("busy", f"priority class {name} was changed concurrently; try again") from e


def priority_classes(db: Database, who: Principal) -> list[ClassEntry]:
    """Every priority class, by name (any signed-in principal)."""
    del who
    with db.begin() as s:
        return [class_from_row(r) for r in tenancy.priority_class_rows(s)]


# ---------------------------------------------------------------------------- projects


def create_project(db: Database, who: Principal, org: str, name: str) -> ProjectEntry:
    """A new project (a leaf of the fair-share tree, shares 1) of an existing org."""
    _admin(who)
    try:
        with db.begin() as s:
            row = tenancy.get_org(s, org)
            if row is None:
                raise not_found("org", org)
            if tenancy.get_project(s, row.id, name) is not None:
                raise conflict("project_exists", f"org {org} already has a project {name}")
            project = tenancy.create_project(s, row.id, name)
            return ProjectEntry(row.name, project.name, project.shares)
    except IntegrityError as e:  # created concurrently between our check and our insert
        raise conflict("project_exists", f"org {org} already has a project {name}") from e
