"""Tokens, who-am-I, org members, pools and node agents' tokens through the API, on SQLite and
the PostgreSQL server; `suanli login|whoami|token|members|admin pool|admin node-token` over
real HTTP (SQLite only).

The database is shared by the whole session: tests make their own orgs, users and pools and
compare row counts and audit rows before and after rather than assuming absolute numbers.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from api.auth import require_node_agent
from suanli.cli import app as cli_app
from suanli.db.models import AuditRow, PoolRow, TokenRow, UserRow
from suanli.db.store import tenancy
from suanli.errors import SuanliError
from suanli.identity import Role, hash_token
from tests.conftest import free_port, Member, unique

TABLES = (UserRow, TokenRow, PoolRow, AuditRow)


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def state(center) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """Everything these routes may write: row counts, and every user's role and disabled
    mark and every token's revocation."""
    with center.db.begin() as s:
        counts = {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in TABLES}
        users = sorted(s.execute(select(UserRow.name, UserRow.role, UserRow.disabled_at)).all())
        tokens = sorted(s.execute(select(TokenRow.id, TokenRow.revoked_at)).all())
    return counts, users, tokens


def last_audit_id(center) -> int:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditRow.id), 0))) or 0)


def audit_since(center, after_id: int) -> list[tuple[str, str, str, Any, Any]]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return [(a.actor, a.action, a.target, a.before, a.after)
                for a in s.scalars(select(AuditRow).where(AuditRow.id > after_id).order_by(AuditRow.id))]


def token_row(center, token_id: int) -> TokenRow:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        row = s.get(TokenRow, token_id)
        assert row is not None
        return row


def org_with_admin(center) -> tuple[Member, str, str]:  # type: ignore[no-untyped-def]
    """A fresh org with a member, plus an org admin added by a center admin: (member, org
    admin's name, org admin's token)."""
    m = center.new_org(prepaid_fen=0)
    name = unique("oa")
    r = center.client.post(f"/v1/orgs/{m.org}/members", json={"name": name, "role": "org-admin"},
                           headers=h(center.tokens.admin))
    assert r.status_code == 201, r.text
    return m, name, r.json()["token"]["token"]


# ---------------------------------------------------------------------------- tokens


def test_token_is_shown_once_and_only_its_hash_is_stored(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: POST /v1/tokens answers 201 with the secret once; the database holds its
    SHA-256 and prefix, never the secret; listings never show it; the new token works, and
    /v1/me names it with its expiry; the creation is audited without the secret."""
    m = center.new_org(prepaid_fen=0)
    mark = last_audit_id(center)
    before = datetime.now(UTC)
    r = center.client.post("/v1/tokens", json={"name": "laptop", "expires_in": "30d"}, headers=h(m.token))
    assert r.status_code == 201, r.text
    body = r.json()
    secret = body["token"]
    assert set(body) == {"id", "user", "name", "prefix", "token", "created_at", "expires_at"}
    assert secret.startswith("sl_") and len(secret) >= 3 + 43 and body["prefix"] == secret[:8]
    assert body["user"] == m.user and body["name"] == "laptop"
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    row = token_row(center, body["id"])
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest() and row.prefix == secret[:8]
    assert all(secret not in str(v) for v in vars(row).values())
    listed = center.client.get("/v1/tokens", headers=h(m.token)).json()
    assert body["id"] in [t["id"] for t in listed] and secret not in json.dumps(listed)
    assert all("token" not in t for t in listed)
    me = center.client.get("/v1/me", headers=h(secret))
    assert me.status_code == 200, me.text
    assert me.json() == {"user": m.user, "role": "member", "org": m.org, "node": None, "token_name": "laptop",
                         "token_expires_at": body["expires_at"]}
    assert audit_since(center, mark) == [(m.user, "token.create", f"user:{m.user}", None,
                                          {"token_id": body["id"], "name": "laptop", "prefix": secret[:8],
                                           "expires_at": expires.isoformat()})]
    assert secret not in json.dumps(audit_since(center, mark))


@pytest.mark.parametrize(("who", "body", "code", "field"), [
    ("member", {"name": "ci"}, "expiry_required", "expires_in"),
    ("member", {"name": "ci", "expires_in": "366d"}, "token_lifetime_too_long", "expires_in"),
    ("member", {"name": "ci", "expires_in": "30x"}, "invalid_request", "expires_in"),
    ("member", {"name": "ci", "expires_in": "1d", "expires_at": "2030-01-01T00:00:00Z"}, "expiry_ambiguous", "expires_at"),
    ("member", {"name": "ci", "expires_at": "2020-01-01T00:00:00Z"}, "bad_expiry", "expires_at"),
    ("member", {"name": "ci", "expires_at": "2027-01-01T00:00:00"}, "invalid_request", "expires_at"),
    ("member", {"name": "bad name", "expires_in": "1d"}, "invalid_request", "name"),
    ("member", {"name": "ci", "expires_in": "1d", "user": "bob"}, "invalid_request", "user"),
    ("admin", {"name": "ci", "expires_in": "400d"}, "token_lifetime_too_long", "expires_in"),
])
def test_bad_token_requests_write_nothing(center, who: str, body: dict[str, Any], code: str, field: str) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a token request with a missing (members), too long, malformed, doubly given,
    past or zone-less expiry, a bad name or an unknown field is 422 with a code naming the
    field, and writes nothing."""
    token = center.tokens.member if who == "member" else center.tokens.admin
    before = state(center)
    r = center.client.post("/v1/tokens", json=body, headers=h(token))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code and field in [e["field"] for e in r.json()["errors"]], r.text
    assert state(center) == before


def test_center_admin_token_may_never_expire(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: center admins (and agents) may make tokens without expiry; members may not."""
    r = center.client.post("/v1/tokens", json={"name": "ops"}, headers=h(center.tokens.admin))
    assert r.status_code == 201 and r.json()["expires_at"] is None, r.text
    center.client.delete(f"/v1/tokens/{r.json()['id']}", headers=h(center.tokens.admin))


def test_expiry_revocation_and_disabled_users_end_authentication(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a token past its expiry, a revoked token, and any token of a disabled user
    are 401 (with WWW-Authenticate); a second revocation is 204 and changes nothing more."""
    m = center.new_org(prepaid_fen=0)
    made = [center.client.post("/v1/tokens", json={"name": f"t{i}", "expires_in": "1h"}, headers=h(m.token)).json()
            for i in range(3)]
    expiring, revoking, spare = made
    for t in made:
        assert center.client.get("/v1/me", headers=h(t["token"])).status_code == 200
    with center.db.begin() as s:  # its hour is over
        s.execute(update(TokenRow).where(TokenRow.id == expiring["id"]).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    r = center.client.get("/v1/me", headers=h(expiring["token"]))
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated" and r.headers["www-authenticate"] == "Bearer"

    mark = last_audit_id(center)
    assert center.client.delete(f"/v1/tokens/{revoking['id']}", headers=h(m.token)).status_code == 204
    assert center.client.get("/v1/me", headers=h(revoking["token"])).status_code == 401
    revoked_at = token_row(center, revoking["id"]).revoked_at
    assert revoked_at is not None
    assert center.client.delete(f"/v1/tokens/{revoking['id']}", headers=h(m.token)).status_code == 204
    assert token_row(center, revoking["id"]).revoked_at == revoked_at
    assert [a[1] for a in audit_since(center, mark)] == ["token.revoke"]
    live = [t["id"] for t in center.client.get("/v1/tokens", headers=h(m.token)).json()]
    assert spare["id"] in live and revoking["id"] not in live and expiring["id"] not in live
    every = [t["id"] for t in center.client.get("/v1/tokens", params={"include_inactive": True}, headers=h(m.token)).json()]
    assert {expiring["id"], revoking["id"], spare["id"]} <= set(every) and every == sorted(every, reverse=True)

    with center.db.begin() as s:  # disabled without revoking anything: the user check alone refuses
        s.execute(update(UserRow).where(UserRow.name == m.user).values(disabled_at=datetime.now(UTC)))
    assert token_row(center, spare["id"]).revoked_at is None
    assert center.client.get("/v1/me", headers=h(spare["token"])).status_code == 401
    assert center.client.get("/v1/me", headers=h(m.token)).status_code == 401


def test_last_used_at_is_marked_at_most_once_a_minute(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: using a token marks `last_used_at`; using it again within the minute does
    not write it again; a minute later it is marked anew."""
    m = center.new_org(prepaid_fen=0)
    t = center.client.post("/v1/tokens", json={"name": "x", "expires_in": "1h"}, headers=h(m.token)).json()
    assert token_row(center, t["id"]).last_used_at is None
    assert center.client.get("/v1/pools", headers=h(t["token"])).status_code == 200
    first = token_row(center, t["id"]).last_used_at
    assert first is not None and datetime.now(UTC) - first < timedelta(seconds=30)
    assert center.client.get("/v1/pools", headers=h(t["token"])).status_code == 200
    assert token_row(center, t["id"]).last_used_at == first
    old = first - timedelta(minutes=2)
    with center.db.begin() as s:
        s.execute(update(TokenRow).where(TokenRow.id == t["id"]).values(last_used_at=old))
    assert center.client.get("/v1/pools", headers=h(t["token"])).status_code == 200
    assert token_row(center, t["id"]).last_used_at > first  # type: ignore[operator]
    listed = {x["id"]: x for x in center.client.get("/v1/tokens", headers=h(m.token)).json()}
    assert listed[t["id"]]["last_used_at"] is not None


def test_who_may_list_and_revoke_whose_tokens(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: members list and revoke only their own tokens (another user's listing is
    403, another user's token 404 and untouched); org admins also their org's users' (a
    foreign org's: 404); center admins anyone's."""
    m, oa_name, oa_token = org_with_admin(center)
    other = center.new_org(prepaid_fen=0)
    mt = center.client.post("/v1/tokens", json={"name": "m", "expires_in": "1h"}, headers=h(m.token)).json()
    ot = center.client.post("/v1/tokens", json={"name": "o", "expires_in": "1h"}, headers=h(other.token)).json()

    assert center.client.get("/v1/tokens", params={"user": other.user}, headers=h(m.token)).status_code == 403
    assert center.client.get("/v1/tokens", params={"user": m.user}, headers=h(m.token)).status_code == 200
    before = state(center)
    assert center.client.delete(f"/v1/tokens/{ot['id']}", headers=h(m.token)).status_code == 404
    assert center.client.delete(f"/v1/tokens/{ot['id']}", headers=h(oa_token)).status_code == 404
    assert center.client.delete("/v1/tokens/999999999", headers=h(center.tokens.admin)).status_code == 404
    assert state(center) == before

    mine = center.client.get("/v1/tokens", params={"user": m.user}, headers=h(oa_token))
    assert mine.status_code == 200 and mt["id"] in [t["id"] for t in mine.json()]
    r = center.client.get("/v1/tokens", params={"user": other.user}, headers=h(oa_token))
    assert r.status_code == 404 and r.json()["code"] == "user_not_found"
    assert center.client.get("/v1/tokens", params={"user": "admin"}, headers=h(oa_token)).status_code == 404
    assert center.client.delete(f"/v1/tokens/{mt['id']}", headers=h(oa_token)).status_code == 204
    assert center.client.get("/v1/me", headers=h(mt["token"])).status_code == 401

    theirs = center.client.get("/v1/tokens", params={"user": other.user}, headers=h(center.tokens.admin))
    assert theirs.status_code == 200 and ot["id"] in [t["id"] for t in theirs.json()]
    mark = last_audit_id(center)
    assert center.client.delete(f"/v1/tokens/{ot['id']}", headers=h(center.tokens.admin)).status_code == 204
    assert audit_since(center, mark) == [("admin", "token.revoke", f"user:{other.user}",
                                          {"token_id": ot["id"], "name": "o", "prefix": ot["prefix"]},
                                          {"revoked_at": token_row(center, ot["id"]).revoked_at.isoformat()})]  # type: ignore[union-attr]
    assert center.client.get("/v1/tokens", params={"user": "nobody-" + unique("x")},
                             headers=h(center.tokens.admin)).status_code == 404


def test_me_for_center_admin(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: /v1/me names a center admin with no org; without a token it is 401."""
    r = center.client.get("/v1/me", headers=h(center.tokens.admin))
    assert r.status_code == 200
    assert r.json() | {"token_expires_at": None} == {"user": "admin", "role": "center-admin", "org": None, "node": None,
                                                     "token_name": "demo", "token_expires_at": None}
    assert center.client.get("/v1/me").status_code == 401


# ---------------------------------------------------------------------------- members


def test_org_admin_invites_members_by_token(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an org admin adds a user to their org (201) with a first token shown once,
    which works at once and expires as asked; the user is listed with their role; the change
    is audited; center admins may add members to any org."""
    m, oa_name, oa_token = org_with_admin(center)
    name = unique("carol")
    mark = last_audit_id(center)
    r = center.client.post(f"/v1/orgs/{m.org}/members", json={"name": name, "expires_in": "7d"}, headers=h(oa_token))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["member"] | {"created_at": None} == {"name": name, "org": m.org, "role": "member", "created_at": None}
    invite = body["token"]
    assert invite["user"] == name and invite["name"] == "invite"
    assert datetime.fromisoformat(invite["expires_at"]) <= datetime.now(UTC) + timedelta(days=7)
    me = center.client.get("/v1/me", headers=h(invite["token"])).json()
    assert (me["user"], me["role"], me["org"]) == (name, "member", m.org)
    assert audit_since(center, mark) == [(oa_name, "member.add", f"user:{name}", None,
                                          {"org": m.org, "role": "member", "token_id": invite["id"],
                                           "expires_at": datetime.fromisoformat(invite["expires_at"]).isoformat()})]
    assert token_row(center, invite["id"]).token_hash == hash_token(invite["token"])
    listed = center.client.get(f"/v1/orgs/{m.org}/members", headers=h(m.token))
    assert listed.status_code == 200
    assert [(x["name"], x["role"]) for x in listed.json()] == sorted([(m.user, "member"), (oa_name, "org-admin"),
                                                                       (name, "member")])
    default = center.client.post(f"/v1/orgs/{m.org}/members", json={"name": unique("dan")}, headers=h(center.tokens.admin))
    assert default.status_code == 201
    lifetime = datetime.fromisoformat(default.json()["token"]["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=364) < lifetime <= timedelta(days=center.settings.max_token_lifetime_days)


@pytest.mark.parametrize(("who", "org", "body", "status", "code"), [
    ("member", "own", {"name": "x1"}, 403, "forbidden"),
    ("org_admin", "foreign", {"name": "x2"}, 404, "org_not_found"),
    ("member", "foreign", {"name": "x3"}, 404, "org_not_found"),
    ("agent", "own", {"name": "x4"}, 404, "org_not_found"),
    ("admin", "missing", {"name": "x5"}, 404, "org_not_found"),
    ("org_admin", "own", {"name": "x6", "role": "center-admin"}, 422, "invalid_request"),
    ("admin", "own", {"name": "x7", "role": "agent"}, 422, "invalid_request"),
    ("org_admin", "own", {"name": "no spaces"}, 422, "invalid_request"),
    ("org_admin", "own", {"name": "node:x"}, 422, "invalid_request"),
    ("org_admin", "own", {"name": "x8", "expires_in": "400d"}, 422, "token_lifetime_too_long"),
    ("org_admin", "own", {"name": "alice"}, 409, "user_exists"),
    ("org_admin", "own", {"name": "x9", "org": "other"}, 422, "invalid_request"),
])
def test_who_may_add_members_and_bad_input_writes_nothing(center, who: str, org: str, body: dict[str, Any], status: int,
                                                          code: str) -> None:  # type: ignore[no-untyped-def]
    """Invariants: only the org's org admins and center admins add members; a foreign org is
    404 (whoever asks), a member of the org gets 403; only the roles member and org-admin can
    be given (no center admins, no agents); bad names, lifetimes and taken names are refused;
    nothing is written."""
    m, _, oa_token = org_with_admin(center)
    other = center.new_org(prepaid_fen=0)
    token = {"member": m.token, "org_admin": oa_token, "admin": center.tokens.admin, "agent": center.tokens.agent}[who]
    target = {"own": m.org, "foreign": other.org, "missing": unique("no-org")}[org]
    body = {**body, "name": body["name"] if body["name"] in ("alice", "no spaces", "node:x") else unique(body["name"])}
    before = state(center)
    r = center.client.post(f"/v1/orgs/{target}/members", json=body, headers=h(token))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert state(center) == before


def test_roles_and_the_last_org_admin(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an org admin promotes and demotes members of their org (audited, before and
    after); the same role again changes nothing; the last org admin cannot demote or remove
    themselves (409 `last_org_admin`, nothing written) but can once there is another; members
    get 403, foreign orgs and unknown or foreign users 404."""
    m, oa_name, oa_token = org_with_admin(center)
    other = center.new_org(prepaid_fen=0)
    before = state(center)
    for user, token, body, status, code in [
        (oa_name, oa_token, {"role": "member"}, 409, "last_org_admin"),
        (m.user, m.token, {"role": "org-admin"}, 403, "forbidden"),
        (other.user, oa_token, {"role": "org-admin"}, 404, "member_not_found"),
        ("admin", oa_token, {"role": "member"}, 404, "member_not_found"),
        (m.user, oa_token, {"role": "center-admin"}, 422, "invalid_request"),
        (m.user, oa_token, {"role": "org-admin", "x": 1}, 422, "invalid_request"),
    ]:
        r = center.client.patch(f"/v1/orgs/{m.org}/members/{user}", json=body, headers=h(token))
        assert (r.status_code, r.json()["code"]) == (status, code), (user, body, r.text)
    r = center.client.patch(f"/v1/orgs/{other.org}/members/{other.user}", json={"role": "org-admin"}, headers=h(oa_token))
    assert (r.status_code, r.json()["code"]) == (404, "org_not_found")
    r = center.client.delete(f"/v1/orgs/{m.org}/members/{oa_name}", headers=h(oa_token))
    assert (r.status_code, r.json()["code"]) == (409, "last_org_admin")
    assert center.client.delete(f"/v1/orgs/{m.org}/members/{oa_name}", headers=h(m.token)).status_code == 403
    assert state(center) == before

    mark = last_audit_id(center)
    r = center.client.patch(f"/v1/orgs/{m.org}/members/{m.user}", json={"role": "org-admin"}, headers=h(oa_token))
    assert r.status_code == 200 and r.json()["role"] == "org-admin", r.text
    assert center.client.patch(f"/v1/orgs/{m.org}/members/{m.user}", json={"role": "org-admin"},
                               headers=h(oa_token)).status_code == 200
    r = center.client.patch(f"/v1/orgs/{m.org}/members/{oa_name}", json={"role": "member"}, headers=h(oa_token))
    assert r.status_code == 200 and r.json()["role"] == "member"
    assert audit_since(center, mark) == [
        (oa_name, "member.role", f"user:{m.user}", {"org": m.org, "role": "member"}, {"org": m.org, "role": "org-admin"}),
        (oa_name, "member.role", f"user:{oa_name}", {"org": m.org, "role": "org-admin"}, {"org": m.org, "role": "member"}),
    ]
    # The demoted one is a member now: no more management.
    assert center.client.patch(f"/v1/orgs/{m.org}/members/{m.user}", json={"role": "member"},
                               headers=h(oa_token)).status_code == 403
    # A center admin may demote the last org admin (they can manage the org themselves).
    r = center.client.patch(f"/v1/orgs/{m.org}/members/{m.user}", json={"role": "member"}, headers=h(center.tokens.admin))
    assert r.status_code == 200 and r.json()["role"] == "member"


def test_removing_a_member_revokes_tokens_and_disables_them(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: removing a member revokes every token of theirs and disables the user in
    one audited change; their tokens are 401 at once; they leave the member list; removing
    them again is 404, and their name is never given again (409)."""
    m, oa_name, oa_token = org_with_admin(center)
    extra = center.client.post("/v1/tokens", json={"name": "x", "expires_in": "1h"}, headers=h(m.token)).json()
    mark = last_audit_id(center)
    assert center.client.delete(f"/v1/orgs/{m.org}/members/{m.user}", headers=h(oa_token)).status_code == 204
    for t in (m.token, extra["token"]):
        assert center.client.get("/v1/me", headers=h(t)).status_code == 401
    with center.db.begin() as s:
        user = tenancy.get_user(s, m.user)
        assert user is not None and user.disabled_at is not None
        revoked = [t.revoked_at for t in tenancy.token_rows(s, user.id)]
    assert len(revoked) == 2 and all(r == user.disabled_at for r in revoked)
    assert audit_since(center, mark) == [(oa_name, "member.remove", f"user:{m.user}", {"org": m.org, "role": "member"},
                                          {"disabled_at": user.disabled_at.isoformat(), "tokens_revoked": 2})]
    names = [x["name"] for x in center.client.get(f"/v1/orgs/{m.org}/members", headers=h(oa_token)).json()]
    assert names == [oa_name]
    r = center.client.delete(f"/v1/orgs/{m.org}/members/{m.user}", headers=h(oa_token))
    assert (r.status_code, r.json()["code"]) == (404, "member_not_found")
    r = center.client.post(f"/v1/orgs/{m.org}/members", json={"name": m.user}, headers=h(oa_token))
    assert (r.status_code, r.json()["code"]) == (409, "user_exists")
    # A center admin may remove the last org admin.
    assert center.client.delete(f"/v1/orgs/{m.org}/members/{oa_name}", headers=h(center.tokens.admin)).status_code == 204
    assert center.client.get("/v1/me", headers=h(oa_token)).status_code == 401


def test_member_list_visibility(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an org's users (any role) and center admins list its members; another
    org's users and agents get 404, as for an org that does not exist."""
    m = center.new_org(prepaid_fen=0)
    other = center.new_org(prepaid_fen=0)
    assert center.client.get(f"/v1/orgs/{m.org}/members", headers=h(m.token)).status_code == 200
    assert center.client.get(f"/v1/orgs/{m.org}/members", headers=h(center.tokens.admin)).status_code == 200
    for token in (other.token, center.tokens.agent):
        r = center.client.get(f"/v1/orgs/{m.org}/members", headers=h(token))
        assert (r.status_code, r.json()["code"]) == (404, "org_not_found")
    assert center.client.get(f"/v1/orgs/{unique('none')}/members", headers=h(center.tokens.admin)).status_code == 404


# ---------------------------------------------------------------------------- pools


def test_pools(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: center admins create pools (201, audited); a taken name is 409, bad shares
    or names 422, other roles 403, all writing nothing; any signed-in user lists pools by name
    with shares and org counts."""
    name = unique("pool")
    mark = last_audit_id(center)
    r = center.client.post("/v1/admin/pools", json={"name": name, "shares": 3}, headers=h(center.tokens.admin))
    assert r.status_code == 201 and r.json() == {"name": name, "shares": 3, "orgs": 0}, r.text
    assert audit_since(center, mark) == [("admin", "pool.create", f"pool:{name}", None, {"shares": 3})]
    before = state(center)
    for token, body, status, code in [
        (center.tokens.admin, {"name": name}, 409, "pool_exists"),
        (center.tokens.admin, {"name": unique("p"), "shares": -1}, 422, "invalid_request"),
        (center.tokens.admin, {"name": unique("p"), "shares": "2"}, 422, "invalid_request"),
        (center.tokens.admin, {"name": unique("p"), "shares": True}, 422, "invalid_request"),
        (center.tokens.admin, {"name": "a b"}, 422, "invalid_request"),
        (center.tokens.member, {"name": unique("p")}, 403, "forbidden"),
        (center.tokens.agent, {"name": unique("p")}, 403, "forbidden"),
    ]:
        r = center.client.post("/v1/admin/pools", json=body, headers=h(token))
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
    assert state(center) == before
    center.new_org(prepaid_fen=0, pool=name)
    center.new_org(prepaid_fen=0, pool=name)
    pools = center.client.get("/v1/pools", headers=h(center.tokens.member))
    assert pools.status_code == 200
    assert {"name": name, "shares": 3, "orgs": 2} in pools.json()
    assert [p["name"] for p in pools.json()] == sorted(p["name"] for p in pools.json())
    assert next(p for p in pools.json() if p["name"] == "universities")["orgs"] >= 1


# ---------------------------------------------------------------------------- node agents


def test_node_tokens_bind_an_agent_to_its_node(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a center admin's node token belongs to the agent user `node:<name>`
    (made once per node, never expiring unless asked); it authenticates as an agent bound to
    that node, which `require_node_agent` lets act for that node only; other roles get 403 and
    bad names 422, writing nothing; each token is audited."""
    node = unique("gpu")
    mark = last_audit_id(center)
    r = center.client.post(f"/v1/admin/nodes/{node}/token", headers=h(center.tokens.admin))
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["user"], first["name"], first["expires_at"]) == (f"node:{node}", "node-agent", None)
    second = center.client.post(f"/v1/admin/nodes/{node}/token", json={"expires_in": "52w"}, headers=h(center.tokens.admin)).json()
    assert second["user"] == f"node:{node}" and second["expires_at"] is not None
    with center.db.begin() as s:
        agents = list(s.scalars(select(UserRow).where(UserRow.node == node)))
        assert [(a.name, a.role, a.org_id) for a in agents] == [(f"node:{node}", "agent", None)]
        who = tenancy.principal_for_token(s, first["token"], datetime.now(UTC))
    assert who is not None and (who.role, who.node) == (Role.AGENT, node)
    assert require_node_agent(who, node) is who
    with pytest.raises(SuanliError) as e:
        require_node_agent(who, unique("gpu"))
    assert e.value.code == "forbidden"
    me = center.client.get("/v1/me", headers=h(second["token"])).json()
    assert (me["user"], me["role"], me["org"], me["node"]) == (f"node:{node}", "agent", None, node)
    assert [(a[1], a[2], a[4]["token_id"]) for a in audit_since(center, mark)] == [
        ("node.token", f"node:{node}", first["id"]), ("node.token", f"node:{node}", second["id"])]

    before = state(center)
    for token, name, status, code in [
        (center.tokens.member, unique("gpu"), 403, "forbidden"),
        (center.tokens.agent, unique("gpu"), 403, "forbidden"),
        (second["token"], unique("gpu"), 403, "forbidden"),
        (center.tokens.admin, "n" * 60, 422, "bad_node_name"),
        (center.tokens.admin, "bad%20name", 422, "invalid_request"),
    ]:
        r = center.client.post(f"/v1/admin/nodes/{name}/token", headers=h(token))
        assert (r.status_code, r.json()["code"]) == (status, code), (name, r.text)
    r = center.client.post(f"/v1/admin/nodes/{node}/token", json={"expires_in": "1d", "x": 1}, headers=h(center.tokens.admin))
    assert r.status_code == 422
    assert state(center) == before


# ---------------------------------------------------------------------------- CLI over HTTP






def test_login_writes_a_private_config_and_whoami_reads_it(center, server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli login` writes server and token to config.toml with mode 0600 only
    after the server accepted the token; a bad URL or token (exit 2), an unknown token (exit
    3) or an unreachable server (exit 6) writes nothing; `whoami` reads the file, and
    SUANLI_SERVER/SUANLI_TOKEN override it."""
    cfg_home = tmp_path / "cfg"
    path = cfg_home / "suanli" / "config.toml"

    def run(*args: str, env: dict[str, str] | None = None, expect: int = 0) -> Any:
        result = CliRunner().invoke(cli_app, list(args), env={"XDG_CONFIG_HOME": str(cfg_home), "COLUMNS": "200",
                                                              "SUANLI_SERVER": None, "SUANLI_TOKEN": None, **(env or {})})
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    assert "--server" in run("login", "--server", "ftp://x", "--token", center.tokens.member, expect=2).output
    assert "--token" in run("login", "--server", server, "--token", 'sl_"; evil = "x', expect=2).output
    assert "unknown, revoked or expired" in run("login", "--server", server, "--token", "sl_" + "A" * 43, expect=3).output
    run("login", "--server", f"http://127.0.0.1:{free_port()}", "--token", center.tokens.member, expect=6)
    assert not path.exists()

    out = run("login", "--server", server + "/", "--token", center.tokens.member).stdout
    assert "alice (member of city-university)" in out and str(path) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {"server": server, "token": center.tokens.member}
    assert "alice (member of city-university)" in run("whoami").stdout
    me = json.loads(run("whoami", "--json").stdout)
    assert (me["user"], me["role"], me["org"], me["server"]) == ("alice", "member", "city-university", server)
    assert json.loads(run("whoami", "--json", env={"SUANLI_TOKEN": center.tokens.admin}).stdout)["user"] == "admin"
    run("whoami", env={"SUANLI_SERVER": f"http://127.0.0.1:{free_port()}"}, expect=6)
    # A failed second login leaves the first one's file as it was.
    run("login", "--server", server, "--token", "sl_" + "B" * 43, expect=3)
    assert tomllib.loads(path.read_text())["token"] == center.tokens.member


def test_token_members_pool_and_node_token_commands(center, server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli token|members|admin pool|admin node-token` work through the real API;
    a new token's secret is printed once and works; `--json` prints only JSON; exit codes are
    2 bad input naming the field, 3 not allowed, 4 not found, 5 conflict."""
    m, oa_name, oa_token = org_with_admin(center)

    def run(*args: str, token: str = oa_token, expect: int = 0) -> Any:
        env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "200"}
        result = CliRunner().invoke(cli_app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    made = json.loads(run("token", "create", "ci", "--expires-in", "2h", "--json").stdout)
    assert made["user"] == oa_name and made["token"].startswith("sl_")
    human = run("token", "create", "laptop", "--expires-in", "1d").stdout
    secret = next(line for line in human.splitlines() if line.startswith("sl_"))
    assert json.loads(run("whoami", "--json", token=secret).stdout)["token_name"] == "laptop"
    assert "expires_in" in run("token", "create", "x", expect=2).output
    assert "expires_in" in run("token", "create", "x", "--expires-in", "2y", expect=2).output
    listed = json.loads(run("token", "list", "--json").stdout)
    assert {made["id"]} <= {t["id"] for t in listed} and all("token" not in t for t in listed)
    assert "ci" in run("token", "list").stdout
    assert "revoked" in run("token", "revoke", str(made["id"])).stdout
    run("token", "revoke", "999999999", expect=4)
    run("token", "list", "--user", "bob", token=m.token, expect=3)

    new = json.loads(run("members", "add", unique("eve"), "--json").stdout)  # --org defaults to the caller's
    assert new["member"]["org"] == m.org and new["token"]["token"].startswith("sl_")
    eve = new["member"]["name"]
    assert f"{eve}: org-admin of {m.org}" in run("members", "set-role", eve, "org-admin", "--org", m.org).stdout
    assert eve in run("members", "list").stdout
    assert {x["name"] for x in json.loads(run("members", "list", "--json").stdout)} == {m.user, oa_name, eve}
    assert "role" in run("members", "set-role", eve, "center-admin", expect=2).output
    run("members", "add", unique("x"), token=m.token, expect=3)
    run("members", "list", "--org", center.new_org(prepaid_fen=0).org, expect=4)
    run("members", "add", eve, expect=5)
    assert "removed" in run("members", "remove", eve).stdout
    run("members", "remove", eve, expect=4)
    assert "you belong to no org" in run("members", "list", token=center.tokens.admin, expect=2).output

    pool = unique("pool")
    assert json.loads(run("admin", "pool", "create", pool, "--shares", "2", "--json", token=center.tokens.admin).stdout) == {
        "name": pool, "shares": 2, "orgs": 0}
    run("admin", "pool", "create", pool, token=center.tokens.admin, expect=5)
    run("admin", "pool", "create", unique("p"), token=m.token, expect=3)
    assert pool in run("admin", "pool", "list", token=center.tokens.admin).stdout
    node = unique("gpu")
    nt = json.loads(run("admin", "node-token", node, "--json", token=center.tokens.admin).stdout)
    assert nt["user"] == f"node:{node}" and nt["token"].startswith("sl_")
    assert json.loads(run("whoami", "--json", token=nt["token"]).stdout)["node"] == node
    run("admin", "node-token", "n" * 60, token=center.tokens.admin, expect=2)
    run("admin", "node-token", node, token=oa_token, expect=3)
