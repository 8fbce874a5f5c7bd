"""Per-process cache of authenticated tokens, so a busy client does not cost a database
transaction per request just to say who it is (it was the largest part of a submission).

Invariants:
- An entry is used for at most `ttl_s` seconds (setting `auth_cache_s`, default 5; 0 turns
  the cache off) and never past its token's own expiry.
- Changes made through this process — a token revoked, a member removed or given another
  role, a user disabled — clear the cache at once (`forget_all`), so they take effect on the
  next request. Through another API replica they take effect here within `ttl_s`; that is
  the documented bound on revocation across replicas.
- Only successful lookups are cached: an unknown, revoked or expired token always goes to the
  database, so a token created a moment ago works at once.
- The `last_used_at` marking (once a minute) still happens: each process looks every token
  up at least once per `ttl_s`, which is shorter than a minute.
- One table per `Database`, at most `MAX_ENTRIES` tokens (cleared when full).
"""

from __future__ import annotations

import threading
import time
import weakref
from datetime import datetime

from suanli.db.engine import Database
from suanli.identity import Principal, hash_token

MAX_ENTRIES = 50_000

def _now() -> float:
    """The cache's clock (monotonic; a function so tests can move it)."""
    return time.monotonic()


_tables: weakref.WeakKeyDictionary[Database, dict[str, tuple[Principal, float]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def get(db: Database, token: str) -> Principal | None:
    """The cached principal of `token`, if cached and still fresh."""
    key = hash_token(token)
    with _lock:
        hit = _tables.get(db, {}).get(key)
    if hit is None or hit[1] <= _now():
        return None
    return hit[0]


def put(db: Database, token: str, who: Principal, token_expires_at: datetime | None, ttl_s: float, now: datetime) -> None:
    if ttl_s <= 0:
        return
    until = ttl_s if token_expires_at is None else min(ttl_s, (token_expires_at - now).total_seconds())
    if until <= 0:
        return
    with _lock:
        table = _tables.setdefault(db, {})
        if len(table) >= MAX_ENTRIES:
            table.clear()
        table[hash_token(token)] = (who, _now() + until)


def forget_all(db: Database) -> None:
    """Drop every cached token of `db` (after any change to tokens, users or roles)."""
    with _lock:
        _tables.pop(db, None)
