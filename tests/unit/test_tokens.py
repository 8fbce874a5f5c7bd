"""Tokens, lifetimes and the node-agent rule, without a database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from api.auth import require_node_agent
from suanli.errors import Kind, SuanliError
from suanli.identity import PREFIX_LEN, Principal, Role, hash_token, new_token, node_user, parse_lifetime, tokens_equal
from suanli.members import token_expiry

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def test_tokens_are_random_256_bits_and_stored_as_sha256() -> None:
    """Invariants: a token is `sl_` + 43 urlsafe characters (32 random bytes), never repeats,
    and its stored form is the SHA-256 hex digest, which does not contain the secret."""
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for t in list(tokens)[:50]:
        assert t.startswith("sl_") and len(t) == 3 + 43
        assert set(t[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert hash_token(t) == hashlib.sha256(t.encode()).hexdigest()
        assert t[3:] not in hash_token(t)
    assert PREFIX_LEN == 8


def test_tokens_equal_compares_whole_secrets() -> None:
    """Invariant: `tokens_equal` is true only for identical strings (any length)."""
    t = new_token()
    assert tokens_equal(t, t)
    assert not tokens_equal(t, t[:-1])
    assert not tokens_equal(t, t[:-1] + ("A" if t[-1] != "A" else "B"))
    assert not tokens_equal(t, "")


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", timedelta(minutes=90)),
    ("12h", timedelta(hours=12)),
    ("30d", timedelta(days=30)),
    ("4w", timedelta(weeks=4)),
    (" 7d ", timedelta(days=7)),
    ("0d", None),
    ("30", None),
    ("d", None),
    ("1.5d", None),
    ("-1d", None),
    ("30D", None),
    ("30y", None),
    ("1234567d", None),
    ("", None),
])
def test_parse_lifetime(text: str, expected: timedelta | None) -> None:
    """Invariant: a lifetime is a positive whole number (at most 6 digits) and one of m h d w."""
    assert parse_lifetime(text) == expected


@pytest.mark.parametrize(("role", "expires_in", "expires_at", "expected"), [
    (Role.MEMBER, "30d", None, NOW + timedelta(days=30)),
    (Role.MEMBER, None, NOW + timedelta(days=1), NOW + timedelta(days=1)),
    (Role.MEMBER, "365d", None, NOW + timedelta(days=365)),  # exactly the longest lifetime
    (Role.ORG_ADMIN, "52w", None, NOW + timedelta(weeks=52)),
    (Role.CENTER_ADMIN, None, None, None),  # may never expire
    (Role.AGENT, None, None, None),
    (Role.CENTER_ADMIN, "12h", None, NOW + timedelta(hours=12)),
])
def test_token_expiry_accepts(role: Role, expires_in: str | None, expires_at: datetime | None,
                              expected: datetime | None) -> None:
    """Invariants: the expiry is now + lifetime or the time given; only center admins and
    agents may have none; up to max_days is allowed."""
    assert token_expiry(role, NOW, expires_in, expires_at, 365) == expected


@pytest.mark.parametrize(("role", "expires_in", "expires_at", "code", "field"), [
    (Role.MEMBER, None, None, "expiry_required", "expires_in"),
    (Role.ORG_ADMIN, None, None, "expiry_required", "expires_in"),
    (Role.MEMBER, "366d", None, "token_lifetime_too_long", "expires_in"),
    (Role.CENTER_ADMIN, "53w", None, "token_lifetime_too_long", "expires_in"),
    (Role.MEMBER, None, NOW + timedelta(days=365, seconds=1), "token_lifetime_too_long", "expires_at"),
    (Role.MEMBER, None, NOW, "bad_expiry", "expires_at"),
    (Role.AGENT, None, NOW - timedelta(days=1), "bad_expiry", "expires_at"),
    (Role.MEMBER, None, datetime(2027, 1, 1), "bad_expiry", "expires_at"),  # no zone
    (Role.MEMBER, "30x", None, "bad_lifetime", "expires_in"),
    (Role.MEMBER, "30d", NOW + timedelta(days=1), "expiry_ambiguous", "expires_at"),
])
def test_token_expiry_refuses(role: Role, expires_in: str | None, expires_at: datetime | None, code: str, field: str) -> None:
    """Invariant: a missing (for members), past, zone-less, too distant, malformed or doubly
    given expiry is refused with a code naming the field."""
    with pytest.raises(SuanliError) as e:
        token_expiry(role, NOW, expires_in, expires_at, 365)
    assert e.value.kind is Kind.INVALID and e.value.code == code
    assert [f.field for f in e.value.errors] == [field]


def who(role: Role, node: str | None = None) -> Principal:
    return Principal(1, node_user(node) if node else "x", role, None, None, node)


@pytest.mark.parametrize(("principal", "node", "allowed"), [
    (who(Role.AGENT, "gpu-01"), "gpu-01", True),  # its own node
    (who(Role.AGENT, "gpu-01"), "gpu-02", False),  # another node
    (who(Role.AGENT, "gpu-01"), "gpu-01x", False),  # not a prefix match
    (who(Role.AGENT), "gpu-02", True),  # the shared demo agent: any node
    (who(Role.CENTER_ADMIN), "gpu-02", True),
    (who(Role.ORG_ADMIN), "gpu-02", False),
    (who(Role.MEMBER), "gpu-02", False),
])
def test_require_node_agent(principal: Principal, node: str, allowed: bool) -> None:
    """Invariant: an agent bound to a node acts only for that node; the unbound agent and
    center admins act for any; members and org admins for none."""
    if allowed:
        assert require_node_agent(principal, node) is principal
    else:
        with pytest.raises(SuanliError) as e:
            require_node_agent(principal, node)
        assert e.value.kind is Kind.FORBIDDEN


def test_node_user_name() -> None:
    """Invariant: a bound agent's user name is `node:<name>`, and the longest node name
    accepted for agent tokens (59) makes a name that fits users.name (64)."""
    from suanli.members import NODE_NAME

    longest = "n" * 59
    assert NODE_NAME.match(longest) and not NODE_NAME.match(longest + "n")
    assert node_user(longest) == "node:" + longest and len(node_user(longest)) == 64
