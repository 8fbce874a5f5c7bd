"""Identity requests and views: tokens, who-am-I, members, pools, node agents' tokens.

Invariants: requests refuse unknown fields and are strict (`true` is not 1); times must
carry a zone. A token's secret appears only in `NewTokenOut` / `NewMemberOut` (the answer to
the call that made it) and never in a listing. `token_out`, `new_token_out`, `me_out`,
`member_out`, `new_member_out` and `pool_out` are the only ways from the identity service's
entries (`suanli.members`) to these views.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.schemas.admin import NAME64
from suanli.members import MAX_SHARES, Me, MemberEntry, NewMember, NewToken, PoolEntry, TokenEntry

LIFETIME = r"^[1-9][0-9]{0,5}[mhdw]$"
LIFETIME_HELP = "How long it lives: a whole number and a unit — 90m, 12h, 30d, 4w"
MemberRole = Literal["member", "org-admin"]


class TokenIn(BaseModel):
    # Not strict as a whole: expires_at arrives as an ISO 8601 string (strict would refuse it).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "laptop", "expires_in": "30d"}]})
    name: str = Field(strict=True, pattern=NAME64, description="What it is for: letters, digits, . _ - (at most 64)")
    expires_in: str | None = Field(None, pattern=LIFETIME, description=LIFETIME_HELP)
    expires_at: AwareDatetime | None = Field(None, description="Or when it expires (not both). Members' and org admins' "
                                                               "tokens must expire, within max_token_lifetime_days")


class NodeTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"expires_in": "52w"}, {}]})
    expires_in: str | None = Field(None, pattern=LIFETIME, description=LIFETIME_HELP + " (default: never)")
    expires_at: AwareDatetime | None = Field(None, description="Or when it expires (not both)")


class TokenOut(BaseModel):
    id: int
    user: str
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart")
    created_at: datetime
    expires_at: datetime | None = Field(description="null: never")
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Refreshed at most once a minute")


def token_out(t: TokenEntry) -> TokenOut:
    return TokenOut(id=t.id, user=t.user, name=t.name, prefix=t.prefix, created_at=t.created_at, expires_at=t.expires_at,
                    revoked_at=t.revoked_at, last_used_at=t.last_used_at)


class NewTokenOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 12, "user": "alice", "name": "laptop", "prefix": "sl_Vq3xY", "token": "sl_Vq3xY…",
        "created_at": "2026-11-29T08:00:00Z", "expires_at": "2026-12-29T08:00:00Z"}]})
    id: int
    user: str
    name: str
    prefix: str
    token: str = Field(description="The secret: shown only now, never again. Send it as 'Authorization: Bearer <token>'")
    created_at: datetime
    expires_at: datetime | None


def new_token_out(t: NewToken) -> NewTokenOut:
    e = t.entry
    return NewTokenOut(id=e.id, user=e.user, name=e.name, prefix=e.prefix, token=t.secret, created_at=e.created_at,
                       expires_at=e.expires_at)


class MeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user": "alice", "role": "member", "org": "city-university", "node": None, "token_name": "laptop",
        "token_expires_at": "2026-12-29T08:00:00Z"}]})
    user: str
    role: str
    org: str | None = Field(description="null for center admins and agents")
    node: str | None = Field(description="Agents bound to one node: that node")
    token_name: str | None
    token_expires_at: datetime | None = Field(description="When the token of this request expires (null: never)")


def me_out(m: Me) -> MeOut:
    return MeOut(user=m.user, role=m.role, org=m.org, node=m.node, token_name=m.token_name, token_expires_at=m.token_expires_at)


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"name": "carol", "role": "member", "expires_in": "30d"}]})
    name: str = Field(pattern=NAME64, description="The new user's name (unique in the center; never reused)")
    role: MemberRole = "member"
    expires_in: str | None = Field(None, pattern=LIFETIME,
                                   description=LIFETIME_HELP + " — of their first token (default: max_token_lifetime_days)")


class MemberRoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"role": "org-admin"}]})
    role: MemberRole


class MemberOut(BaseModel):
    name: str
    org: str
    role: str
    created_at: datetime


def member_out(m: MemberEntry) -> MemberOut:
    return MemberOut(name=m.name, org=m.org, role=m.role, created_at=m.created_at)


class NewMemberOut(BaseModel):
    member: MemberOut
    token: NewTokenOut = Field(description="Their first token, shown only now: hand it to them (the invitation)")


def new_member_out(m: NewMember) -> NewMemberOut:
    return NewMemberOut(member=member_out(m.member), token=new_token_out(m.token))


class PoolIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"name": "hospitals", "shares": 2}]})
    name: str = Field(pattern=NAME64, description="letters, digits, . _ - (at most 64)")
    shares: int = Field(1, ge=0, le=MAX_SHARES, description="Fair-share weight against the other pools")


class PoolOut(BaseModel):
    name: str
    shares: int
    orgs: int = Field(description="How many orgs it holds")


def pool_out(p: PoolEntry) -> PoolOut:
    return PoolOut(name=p.name, shares=p.shares, orgs=p.orgs)
