"""Bearer-token authentication and role checks.

Invariants: every route except /healthz, /metrics and the docs needs a live token (unrevoked,
unexpired, its user not disabled; successful lookups are cached for `auth_cache_s` seconds,
see `suanli.authcache` for the revocation bound); the role checks here are the only place roles are
compared. An agent bound to a node acts only for that node (`require_node_agent`).
"""

from __future__ import annotations

from fastapi import Request

from suanli import authcache
from suanli.db.engine import Database
from suanli.db.store import tenancy
from suanli.errors import forbidden, unauthenticated
from suanli.identity import Principal, Role
from suanli.jobs import utcnow


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def cached_principal(request: Request, db: Database) -> Principal | None:
    """The caller from the token cache, or None (no token, or not cached): no I/O."""
    token = bearer_token(request)
    return authcache.get(db, token) if token else None


def principal_from_request(request: Request, db: Database) -> Principal:
    """The caller, looked up in the database (after `cached_principal` missed) and cached."""
    token = bearer_token(request)
    if token is None:
        raise unauthenticated("send 'Authorization: Bearer <token>' (see `suanli up` output or `suanli login`)")
    now = utcnow()
    with db.begin() as s:
        found = tenancy.token_principal(s, token, now)
    if found is None:
        raise unauthenticated("the token is unknown, revoked or expired")
    settings = getattr(request.app.state, "settings", None)
    authcache.put(db, token, found[0], found[1], settings.auth_cache_s if settings else 0.0, now)
    return found[0]


def require(who: Principal, *roles: Role) -> Principal:
    if who.role not in roles:
        raise forbidden(f"this needs one of the roles {', '.join(r.value for r in roles)}; you are {who.role.value}")
    return who


def require_node_agent(who: Principal, node: str) -> Principal:
    """The caller may act for `node` as its agent: an agent bound to that very node, the shared
    (unbound) demo agent, or a center admin. An agent bound to another node, and anyone else,
    is refused — so a leaked node token cannot speak for the rest of the cluster."""
    if who.role is Role.CENTER_ADMIN or (who.role is Role.AGENT and (who.node is None or who.node == node)):
        return who
    if who.role is Role.AGENT:
        raise forbidden(f"this agent's token is bound to node {who.node}; it cannot act for {node}")
    raise forbidden(f"this needs the role {Role.AGENT.value} or {Role.CENTER_ADMIN.value}; you are {who.role.value}")
