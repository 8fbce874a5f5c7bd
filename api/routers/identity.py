"""/v1: who-am-I, API tokens, org members, pools, node agents' tokens.

Invariants: thin — parse, call `suanli.members`, return a schema. A token's secret is in the
answer of the call that made it and nowhere else. /v1/admin routes take `AdminDep` (403 for
anyone but a center admin before the body is read); members routes let the service decide,
so a foreign org is 404 and a member of the org 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from api.deps import DbDep, PrincipalDep, SettingsDep
from api.routers.admin import AdminDep
from api.schemas.admin import NAME64
from api.schemas.identity import (
    MemberIn,
    MemberOut,
    MemberRoleIn,
    MeOut,
    NewMemberOut,
    NewTokenOut,
    NodeTokenIn,
    PoolIn,
    PoolOut,
    TokenIn,
    TokenOut,
    me_out,
    member_out,
    new_member_out,
    new_token_out,
    pool_out,
    token_out,
)
from suanli import members as service

router = APIRouter(prefix="/v1", tags=["identity"])

OrgPath = Annotated[str, Path(description="The org's name")]
UserPath = Annotated[str, Path(description="The member's user name")]


@router.get("/me", response_model=MeOut)
def me(who: PrincipalDep, db: DbDep) -> MeOut:
    """Who this token belongs to: user, role, org (and node, for bound agents), and the token's
    name and expiry."""
    return me_out(service.whoami(db, who))


# ---------------------------------------------------------------------------- tokens


@router.post("/tokens", response_model=NewTokenOut, status_code=201)
def create_token(body: TokenIn, who: PrincipalDep, db: DbDep, settings: SettingsDep) -> NewTokenOut:
    """A new token for yourself. The secret (`token`) is in this answer only: store it now.
    Members' and org admins' tokens must expire (`expires_in` or `expires_at`), within
    `max_token_lifetime_days`."""
    return new_token_out(service.create_token(db, who, body.name, body.expires_in, body.expires_at,
                                              settings.max_token_lifetime_days))


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(
    who: PrincipalDep,
    db: DbDep,
    user: Annotated[str | None, Query(max_length=64, description="Another user's tokens: center admins any user's, "
                                                                 "org admins their org's users'")] = None,
    include_inactive: Annotated[bool, Query(description="Also revoked and expired tokens")] = False,
) -> list[TokenOut]:
    """Your tokens (never their secrets), newest first."""
    return [token_out(t) for t in service.list_tokens(db, who, user, include_inactive)]


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], who: PrincipalDep, db: DbDep) -> Response:
    """Revoke a token at once: yours; org admins also their org's users'; center admins any.
    Tokens you may not touch are 404."""
    service.revoke_token(db, who, token_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- members


@router.post("/orgs/{org}/members", response_model=NewMemberOut, status_code=201)
def add_member(org: OrgPath, body: MemberIn, who: PrincipalDep, db: DbDep, settings: SettingsDep) -> NewMemberOut:
    """Add a user to the org (org admins of the org, center admins). The answer holds their
    first token, shown only now: handing it over is the invitation."""
    return new_member_out(service.add_member(db, who, org, body.name, body.role, body.expires_in,
                                             settings.max_token_lifetime_days))


@router.get("/orgs/{org}/members", response_model=list[MemberOut])
def list_members(org: OrgPath, who: PrincipalDep, db: DbDep) -> list[MemberOut]:
    """The org's members by name (its own users and center admins)."""
    return [member_out(m) for m in service.list_members(db, who, org)]


@router.patch("/orgs/{org}/members/{user}", response_model=MemberOut)
def set_member_role(org: OrgPath, user: UserPath, body: MemberRoleIn, who: PrincipalDep, db: DbDep) -> MemberOut:
    """Change a member's role. An org admin cannot leave the org without an org admin (409
    `last_org_admin`)."""
    return member_out(service.set_member_role(db, who, org, user, body.role))


@router.delete("/orgs/{org}/members/{user}", status_code=204, response_class=Response)
def remove_member(org: OrgPath, user: UserPath, who: PrincipalDep, db: DbDep) -> Response:
    """Remove a member: all their tokens are revoked and the user is disabled (their jobs are
    left alone). An org admin cannot remove the org's last org admin (409 `last_org_admin`)."""
    service.remove_member(db, who, org, user)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- pools


@router.post("/admin/pools", response_model=PoolOut, status_code=201)
def create_pool(body: PoolIn, who: AdminDep, db: DbDep) -> PoolOut:
    """A new pool (universities, enterprises, …): the fair-share level above orgs."""
    return pool_out(service.create_pool(db, who, body.name, body.shares))


@router.get("/pools", response_model=list[PoolOut])
def list_pools(who: PrincipalDep, db: DbDep) -> list[PoolOut]:
    """Pools by name, with shares and how many orgs each holds (any signed-in user)."""
    return [pool_out(p) for p in service.list_pools(db, who)]


# ---------------------------------------------------------------------------- node agents


@router.post("/admin/nodes/{name}/token", response_model=NewTokenOut, status_code=201)
def create_node_token(
    name: Annotated[str, Path(pattern=NAME64, description="The server's name, as its agent reports it (at most 59)")],
    who: AdminDep,
    db: DbDep,
    settings: SettingsDep,
    body: Annotated[NodeTokenIn | None, Body()] = None,
) -> NewTokenOut:
    """A token for one server's agent (user `node:<name>`): it may register and heartbeat only
    as that node. No expiry unless asked; earlier tokens of the node stay valid until revoked."""
    body = body or NodeTokenIn()
    return new_token_out(service.create_node_token(db, who, name, body.expires_in, body.expires_at,
                                                   settings.max_token_lifetime_days))
