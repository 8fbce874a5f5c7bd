"""Identity service: API tokens, who-am-I, org members, pools and node agents' tokens.

Invariants:
- A token's secret exists only in the answer to the call that made it (`NewToken.secret`);
  the database keeps its SHA-256 and a short prefix (`suanli.identity`).
- Tokens of members and org admins always expire, at most `max_days` (the setting
  `max_token_lifetime_days`) after they are made; center admins' and agents' tokens may
  have no expiry (`token_expiry`).
- Who may touch whose tokens: everyone their own; org admins those of their org's users;
  center admins anyone's. A token the caller may not touch is "not found", like a foreign
  org's objects.
- Members are managed by their org's org admins and by center admins. Anyone else asking
  about a foreign org gets 404 `org_not_found` before the database is read; a member of the
  org gets 403. Roles given here are only `member` and `org-admin`.
- An org admin's change never leaves their org without an org admin (409 `last_org_admin`);
  member changes of one org queue behind a lock on the org's row, so two org admins cannot
  demote each other at once. Center admins may leave an org without one.
- A removed member is disabled, never deleted (jobs, bills and audit rows name them): all
  their tokens are revoked at once and a disabled user's tokens never authenticate again.
  User names are never reused.
- Each call is one transaction; every check runs before the first write, so bad input
  writes nothing; every change writes one audit row in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli import authcache
from suanli.db.engine import Database
from suanli.db.models import OrgRow, TokenRow, UserRow
from suanli.db.store import billing as billing_store
from suanli.db.store import tenancy
from suanli.errors import conflict, forbidden, invalid, not_found, unauthenticated
from suanli.identity import Principal, Role, new_token, node_user, parse_lifetime
from suanli.jobs import utcnow

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # users, pools, token names: VARCHAR(64)
# A node's agent is the user `node:<name>` (VARCHAR(64)), so a bound node's name has at most
# 59 characters; host names are DNS labels (at most 63) and in practice far shorter.
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,58}$")
MEMBER_ROLES = (Role.MEMBER, Role.ORG_ADMIN)
NO_EXPIRY_ROLES = (Role.CENTER_ADMIN, Role.AGENT)
MAX_SHARES = 1_000_000
INVITE_TOKEN = "invite"
NODE_TOKEN = "node-agent"


@dataclass(frozen=True)
class TokenEntry:
    id: int
    user: str
    name: str
    prefix: str  # the secret's first characters, to tell tokens apart
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    entry: TokenEntry
    secret: str  # shown this once, never stored


@dataclass(frozen=True)
class Me:
    user: str
    role: str
    org: str | None
    node: str | None
    token_name: str | None
    token_expires_at: datetime | None


@dataclass(frozen=True)
class MemberEntry:
    name: str
    org: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class NewMember:
    member: MemberEntry
    token: NewToken  # their first token (the invitation)


@dataclass(frozen=True)
class PoolEntry:
    name: str
    shares: int
    orgs: int


def token_entry(row: TokenRow, user: str) -> TokenEntry:
    return TokenEntry(row.id, user, row.name, row.prefix, row.created_at, row.expires_at, row.revoked_at, row.last_used_at)


def member_entry(row: UserRow, org: str) -> MemberEntry:
    return MemberEntry(row.name, org, row.role, row.created_at)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


# ---------------------------------------------------------------------------- checks (pure)


def token_expiry(role: Role, now: datetime, expires_in: str | None, expires_at: datetime | None,
                 max_days: int) -> datetime | None:
    """When a new token of someone with `role` expires: `now + expires_in`, or `expires_at`;
    None (never) only for center admins and agents who gave neither."""
    if expires_in is not None and expires_at is not None:
        raise invalid("expiry_ambiguous", "give expires_in or expires_at, not both", "expires_at")
    field = "expires_in" if expires_in is not None else "expires_at"
    if expires_in is not None:
        life = parse_lifetime(expires_in)
        if life is None:
            raise invalid("bad_lifetime", f"expires_in is a whole number and a unit: 90m, 12h, 30d or 4w, not {expires_in!r}",
                          "expires_in")
        expires_at = now + life
    elif expires_at is None:
        if role in NO_EXPIRY_ROLES:
            return None
        raise invalid("expiry_required", f"a {role.value}'s token must expire: give expires_in (e.g. 30d; at most "
                                         f"{max_days}d) or expires_at", "expires_in")
    if expires_at.tzinfo is None:
        raise invalid("bad_expiry", "expires_at needs a time zone, e.g. 2027-01-01T00:00:00+08:00", "expires_at")
    if expires_at <= now:
        raise invalid("bad_expiry", "the expiry is not in the future", field)
    if expires_at > now + timedelta(days=max_days):
        raise invalid("token_lifetime_too_long", f"tokens live at most {max_days} days (max_token_lifetime_days)", field)
    return expires_at


def _name(value: str, field: str, what: str) -> None:
    if not NAME.match(value):
        raise invalid(f"bad_{what}_name", f"{what} names are letters, digits, . _ - (at most 64), not {value!r}", field)


def _member_role(role: str) -> Role:
    if role not in {r.value for r in MEMBER_ROLES}:
        raise invalid("bad_role", f"a member's role is {' or '.join(MEMBER_ROLES)}, not {role!r}", "role")
    return Role(role)


def _check_manages(who: Principal, org: str) -> None:
    """Center admins, or org admins of `org`; a foreign org is 404, a member's own org 403."""
    if who.role is Role.CENTER_ADMIN:
        return
    if who.org != org:
        raise not_found("org", org)
    if who.role is not Role.ORG_ADMIN:
        raise forbidden(f"only org admins of {org} and center admins manage its members; you are {who.role.value}")


def _admin(who: Principal) -> None:
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"this needs the role {Role.CENTER_ADMIN.value}; you are {who.role.value}")


def _touches_tokens_of(who: Principal, owner: UserRow) -> bool:
    return (owner.id == who.user_id or who.role is Role.CENTER_ADMIN
            or (who.role is Role.ORG_ADMIN and owner.org_id is not None and owner.org_id == who.org_id))


# ---------------------------------------------------------------------------- tokens


def create_token(db: Database, who: Principal, name: str, expires_in: str | None, expires_at: datetime | None,
                 max_days: int) -> NewToken:
    """A new token for the caller, its secret shown once."""
    _name(name, "name", "token")
    now = utcnow()
    expiry = token_expiry(who.role, now, expires_in, expires_at, max_days)
    secret = new_token()
    with db.begin() as s:
        user = tenancy.get_user_by_id(s, who.user_id)
        if user is None or user.disabled_at is not None:  # removed since this request was authenticated
            raise unauthenticated("this user was removed")
        row = tenancy.add_token(s, user.id, secret, now, name, expiry)
        billing_store.audit(s, who.user, "token.create", f"user:{user.name}", None,
                            {"token_id": row.id, "name": name, "prefix": row.prefix, "expires_at": _iso(expiry)}, now)
        return NewToken(token_entry(row, user.name), secret)


def _token_owner(s: Session, who: Principal, user: str | None) -> UserRow:
    if user is None or user == who.user:
        row = tenancy.get_user_by_id(s, who.user_id)
        if row is None:
            raise unauthenticated("this user no longer exists")
        return row
    if who.role not in (Role.CENTER_ADMIN, Role.ORG_ADMIN):
        raise forbidden(f"only admins list another user's tokens; you are {who.role.value}")
    row = tenancy.get_user(s, user)
    if row is None or not _touches_tokens_of(who, row):
        raise not_found("user", user)
    return row


def list_tokens(db: Database, who: Principal, user: str | None = None, include_inactive: bool = False) -> list[TokenEntry]:
    """The caller's tokens (or, for admins, another user's), newest first; only live ones
    unless `include_inactive` (then revoked and expired ones too). Never the secrets."""
    now = utcnow()
    with db.begin() as s:
        owner = _token_owner(s, who, user)
        return [token_entry(r, owner.name) for r in tenancy.token_rows(s, owner.id, None if include_inactive else now)]


def revoke_token(db: Database, who: Principal, token_id: int) -> None:
    """Revoke a token at once. Revoking a revoked token changes nothing (and audits nothing)."""
    now = utcnow()
    with db.begin() as s:
        row = tenancy.get_token(s, token_id)
        owner = tenancy.get_user_by_id(s, row.user_id) if row is not None else None
        if row is None or owner is None or not _touches_tokens_of(who, owner):
            raise not_found("token", token_id)
        if tenancy.revoke_token(s, row.id, now):
            billing_store.audit(s, who.user, "token.revoke", f"user:{owner.name}",
                                {"token_id": row.id, "name": row.name, "prefix": row.prefix}, {"revoked_at": _iso(now)}, now)
    authcache.forget_all(db)  # after the commit: the revocation holds from the next request on


def whoami(db: Database, who: Principal) -> Me:
    """The caller, their role and org, and the token they called with."""
    token = None
    if who.token_id is not None:
        with db.begin() as s:
            token = tenancy.get_token(s, who.token_id)
    return Me(who.user, who.role.value, who.org, who.node, token.name if token else None, token.expires_at if token else None)


# ---------------------------------------------------------------------------- members


def _lock_org(s: Session, org: str) -> OrgRow:
    found = tenancy.get_org(s, org)
    row = billing_store.lock_org(s, found.id) if found is not None else None
    if row is None:
        raise not_found("org", org)
    return row


def _member(s: Session, org: OrgRow, user: str) -> UserRow:
    row = tenancy.get_user(s, user)
    if row is None or row.org_id != org.id or row.disabled_at is not None or row.role not in set(MEMBER_ROLES):
        raise not_found("member", user)
    return row


def _last_admin_guard(s: Session, who: Principal, org: OrgRow, target: UserRow, verb: str) -> None:
    if (target.role == Role.ORG_ADMIN and who.role is not Role.CENTER_ADMIN
            and tenancy.count_org_admins(s, org.id) <= 1):
        raise conflict("last_org_admin", f"{target.name} is the last org admin of {org.name}; make another member "
                                         f"org-admin before you {verb} them")


def add_member(db: Database, who: Principal, org: str, name: str, role: str, expires_in: str | None,
               max_days: int) -> NewMember:
    """A new user of `org` with `role` and their first token, shown once: handing that token
    over is the invitation. It expires after `expires_in` (default: `max_days`)."""
    _check_manages(who, org)
    _name(name, "name", "user")
    member_role = _member_role(role)
    now = utcnow()
    expiry = token_expiry(member_role, now, expires_in, None, max_days) if expires_in is not None \
        else now + timedelta(days=max_days)
    secret = new_token()
    try:
        with db.begin() as s:
            org_row = _lock_org(s, org)
            if tenancy.get_user(s, name) is not None:
                raise conflict("user_exists", f"a user named {name} exists already (names are never reused)")
            user = tenancy.create_user(s, name, member_role, org_row.id, now)
            token = tenancy.add_token(s, user.id, secret, now, INVITE_TOKEN, expiry)
            billing_store.audit(s, who.user, "member.add", f"user:{name}", None,
                                {"org": org, "role": member_role.value, "token_id": token.id, "expires_at": _iso(expiry)}, now)
            return NewMember(member_entry(user, org), NewToken(token_entry(token, name), secret))
    except IntegrityError as e:  # made concurrently between our check and our insert
        raise conflict("user_exists", f"a user named {name} exists already (names are never reused)") from e


def list_members(db: Database, who: Principal, org: str) -> list[MemberEntry]:
    """The org's members (not the removed ones) by name: for its own users and center admins."""
    if who.role is not Role.CENTER_ADMIN and who.org != org:
        raise not_found("org", org)
    with db.begin() as s:
        row = tenancy.get_org(s, org)
        if row is None:
            raise not_found("org", org)
        return [member_entry(u, org) for u in tenancy.org_members(s, row.id)]


def set_member_role(db: Database, who: Principal, org: str, user: str, role: str) -> MemberEntry:
    """Make a member org-admin or member. Giving the role they have changes nothing."""
    _check_manages(who, org)
    new_role = _member_role(role)
    now = utcnow()
    with db.begin() as s:
        org_row = _lock_org(s, org)
        row = _member(s, org_row, user)
        before = row.role
        if before == new_role:
            return member_entry(row, org)
        _last_admin_guard(s, who, org_row, row, "demote")
        row.role = new_role.value
        s.flush()
        billing_store.audit(s, who.user, "member.role", f"user:{user}", {"org": org, "role": before},
                            {"org": org, "role": new_role.value}, now)
        entry = member_entry(row, org)
    authcache.forget_all(db)  # cached principals carry the old role
    return entry


def remove_member(db: Database, who: Principal, org: str, user: str) -> None:
    """Remove a member: every token of theirs is revoked and the user is disabled. Their jobs
    are left alone (an org admin may cancel them)."""
    _check_manages(who, org)
    now = utcnow()
    with db.begin() as s:
        org_row = _lock_org(s, org)
        row = _member(s, org_row, user)
        _last_admin_guard(s, who, org_row, row, "remove")
        revoked = tenancy.revoke_tokens_of(s, row.id, now)
        row.disabled_at = now
        s.flush()
        billing_store.audit(s, who.user, "member.remove", f"user:{user}", {"org": org, "role": row.role},
                            {"disabled_at": _iso(now), "tokens_revoked": revoked}, now)
    authcache.forget_all(db)


# ---------------------------------------------------------------------------- pools


def create_pool(db: Database, who: Principal, name: str, shares: int) -> PoolEntry:
    """A new pool (a level of the fair-share tree between the center and orgs)."""
    _admin(who)
    _name(name, "name", "pool")
    if isinstance(shares, bool) or not 0 <= shares <= MAX_SHARES:
        raise invalid("bad_shares", f"shares are a whole number from 0 to {MAX_SHARES}", "shares")
    now = utcnow()
    try:
        with db.begin() as s:
            if tenancy.get_pool(s, name) is not None:
                raise conflict("pool_exists", f"a pool named {name} exists already")
            row = tenancy.create_pool(s, name, shares)
            billing_store.audit(s, who.user, "pool.create", f"pool:{name}", None, {"shares": shares}, now)
            return PoolEntry(row.name, row.shares, 0)
    except IntegrityError as e:
        raise conflict("pool_exists", f"a pool named {name} exists already") from e


def list_pools(db: Database, who: Principal) -> list[PoolEntry]:
    """Every pool by name with its shares and how many orgs it holds (any signed-in user)."""
    del who
    with db.begin() as s:
        return [PoolEntry(p.name, p.shares, n) for p, n in tenancy.pools_with_org_counts(s)]


# ---------------------------------------------------------------------------- node agents


def create_node_token(db: Database, who: Principal, node: str, expires_in: str | None, expires_at: datetime | None,
                      max_days: int) -> NewToken:
    """A token for the agent of one server: the agent user `node:<name>` (made on first use)
    may act only for that node (`api.auth.require_node_agent`). The node need not have
    registered yet: the token is what its agent registers with. Earlier tokens of the node stay
    valid until revoked (`DELETE /v1/tokens/{id}`), so agents can be rotated without a gap."""
    _admin(who)
    if not NODE_NAME.match(node):
        raise invalid("bad_node_name", f"node names for agent tokens are letters, digits, . _ - (at most 59), not {node!r}",
                      "name")
    now = utcnow()
    expiry = token_expiry(Role.AGENT, now, expires_in, expires_at, max_days)
    secret = new_token()
    try:
        with db.begin() as s:
            agent = tenancy.get_node_agent(s, node)
            if agent is None:
                if tenancy.get_user(s, node_user(node)) is not None:
                    raise conflict("user_exists", f"a user named {node_user(node)} exists and is not {node}'s agent")
                agent = tenancy.create_node_agent(s, node_user(node), node, now)
            if agent.disabled_at is not None:
                raise conflict("agent_disabled", f"the agent of {node} was disabled")
            row = tenancy.add_token(s, agent.id, secret, now, NODE_TOKEN, expiry)
            after: dict[str, Any] = {"user": agent.name, "token_id": row.id, "prefix": row.prefix,
                                     "expires_at": _iso(expiry)}
            billing_store.audit(s, who.user, "node.token", f"node:{node}", None, after, now)
            return NewToken(token_entry(row, agent.name), secret)
    except IntegrityError as e:  # the agent user was made concurrently: ask again
        raise conflict("user_exists", f"{node}'s agent was being created concurrently; try again") from e
