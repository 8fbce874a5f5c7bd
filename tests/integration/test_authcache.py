"""The per-process token cache (`suanli.authcache`) on a real app and database (SQLite): it
saves the lookup, never outlives its TTL or the token, and changes made through the API
(revocation, member removal, role change) take effect on the very next request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import event, update

from api.app import create_app
from suanli import authcache
from suanli.db.models import TokenRow
from suanli.identity import hash_token
from tests.conftest import make_center


def cached_app(tmp_path: Path, ttl: float):  # type: ignore[no-untyped-def]
    c = make_center("", tmp_path, "sqlite")
    settings = c.settings.model_copy(update={"auth_cache_s": ttl})
    return c, TestClient(create_app(settings, c.db), raise_server_exceptions=False)


def count_token_lookups(c):  # type: ignore[no-untyped-def]
    seen = {"n": 0}

    @event.listens_for(c.db.engine, "before_cursor_execute")
    def _count(conn, cursor, statement, *a):  # type: ignore[no-untyped-def]
        if "api_tokens.token_hash = " in statement:  # the lookup by the secret's hash
            seen["n"] += 1

    return seen


def test_cache_saves_lookups_and_expires_with_its_ttl(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Invariants: within the TTL a token is looked up once, not per request; a change made
    behind the API's back (directly in the database) is seen once the TTL has passed. (The
    cache's monotonic clock is advanced by hand, so a slow machine cannot expire it early.)"""
    clock = {"t": 1000.0}
    monkeypatch.setattr(authcache, "_now", lambda: clock["t"])
    c, client = cached_app(tmp_path, ttl=30)
    m = c.new_org()
    seen = count_token_lookups(c)
    h = {"Authorization": f"Bearer {m.token}"}
    for _ in range(5):
        assert client.get("/v1/me", headers=h).status_code == 200
    assert seen["n"] == 1
    with c.db.begin() as s:
        s.execute(update(TokenRow).where(TokenRow.token_hash == hash_token(m.token)).values(revoked_at=datetime.now(UTC)))
    clock["t"] += 29
    assert client.get("/v1/me", headers=h).status_code == 200  # still cached: the documented bound
    clock["t"] += 2
    assert client.get("/v1/me", headers=h).status_code == 401
    c.db.dispose()


def test_cache_never_outlives_the_token(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a token that expires in 20 s is cached for at most those 20 s, whatever
    the TTL: once they have passed (on the cache's clock) it is looked up again."""
    clock = {"t": 1000.0}
    monkeypatch.setattr(authcache, "_now", lambda: clock["t"])
    c, client = cached_app(tmp_path, ttl=30)
    m = c.new_org()
    made = client.post("/v1/tokens", headers={"Authorization": f"Bearer {m.token}"}, json={"name": "short", "expires_in": "1h"})
    assert made.status_code == 201, made.text
    with c.db.begin() as s:
        s.execute(update(TokenRow).where(TokenRow.id == made.json()["id"])
                  .values(expires_at=datetime.now(UTC) + timedelta(seconds=20)))
    seen = count_token_lookups(c)
    h = {"Authorization": f"Bearer {made.json()['token']}"}
    assert client.get("/v1/me", headers=h).status_code == 200
    clock["t"] += 12  # well inside the token's 20 s, even on a slow machine
    assert client.get("/v1/me", headers=h).status_code == 200 and seen["n"] == 1
    clock["t"] += 9
    client.get("/v1/me", headers=h)
    assert seen["n"] == 2, "served from the cache past the token's expiry"
    c.db.dispose()


def test_changes_through_the_api_take_effect_at_once(tmp_path: Path) -> None:
    """Invariants: with a long TTL, a token revoked through the API, a member removed, and a
    member demoted are all seen on the very next request (the service clears the cache)."""
    c, client = cached_app(tmp_path, ttl=30)
    admin = {"Authorization": f"Bearer {c.tokens.admin}"}
    m = c.new_org()
    mine = {"Authorization": f"Bearer {m.token}"}
    made = client.post("/v1/tokens", headers=mine, json={"name": "x", "expires_in": "1h"}).json()
    other = {"Authorization": f"Bearer {made['token']}"}
    assert client.get("/v1/me", headers=other).status_code == 200
    assert client.delete(f"/v1/tokens/{made['id']}", headers=mine).status_code == 204
    assert client.get("/v1/me", headers=other).status_code == 401

    boss = client.post(f"/v1/orgs/{m.org}/members", headers=admin, json={"name": "boss-" + m.user, "role": "org-admin"})
    assert boss.status_code == 201, boss.text
    boss_h = {"Authorization": f"Bearer {boss.json()['token']['token']}"}
    assert client.get("/v1/me", headers=boss_h).json()["role"] == "org-admin"
    r = client.patch(f"/v1/orgs/{m.org}/members/boss-{m.user}", headers=admin, json={"role": "member"})
    assert r.status_code == 200, r.text
    assert client.get("/v1/me", headers=boss_h).json()["role"] == "member"
    assert client.get("/v1/me", headers=mine).status_code == 200
    assert client.delete(f"/v1/orgs/{m.org}/members/{m.user}", headers=admin).status_code == 204
    assert client.get("/v1/me", headers=mine).status_code == 401
    authcache.forget_all(c.db)
    c.db.dispose()
