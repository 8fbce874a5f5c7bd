"""Bearer-token authentication and role checks.

Invariants: every route except /healthz, /metrics and the docs needs a live token; the role
checks here are the only place roles are compared.
"""

from __future__ import annotations

from fastapi import Request

from suanli.db.engine import Database
from suanli.db.store import tenancy
from suanli.errors import forbidden, unauthenticated
from suanli.identity import Principal, Role
from suanli.jobs import utcnow


def principal_from_request(request: Request, db: Database) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("send 'Authorization: Bearer <token>' (see `suanli up` output or `suanli login`)")
    with db.begin() as s:
        who = tenancy.principal_for_token(s, token.strip(), utcnow())
    if who is None:
        raise unauthenticated("the token is unknown, revoked or expired")
    return who


def require(who: Principal, *roles: Role) -> Principal:
    if who.role not in roles:
        raise forbidden(f"this needs one of the roles {', '.join(r.value for r in roles)}; you are {who.role.value}")
    return who
