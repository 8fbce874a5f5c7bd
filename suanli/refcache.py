"""Per-process cache of the reference data a job submission is checked against: accelerator
types, priority classes, and the sizes of the servers of each type. Submissions are the
API's hottest write (a public center takes bursts of thousands), and these tables change a
few times a day, so re-reading them on every submit would triple its database round trips.

Invariants:
- The cache only ever speeds up *acceptance*. A submission the cached data would refuse is
  checked again against data read afresh, in the submit's own transaction, before it is
  refused: a type, class or server added a moment ago is never wrongly refused.
- Cached data is at most `TTL_S` old. A submission accepted from it may name a server size
  drained or removed within that window; the scheduler then reports the job `never_fits`,
  which is also what happens to a job whose last server is removed just after it was
  submitted.
- One entry per `Database` (tests run many centers in one process); entries go with it.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from sqlalchemy.orm import Session

from scheduler.types import Vendor
from suanli.db.engine import Database
from suanli.db.store import nodes as node_store
from suanli.db.store import tenancy

TTL_S = 2.0


@dataclass(frozen=True)
class Reference:
    loaded_at: float  # time.monotonic()
    vendors: dict[str, Vendor]  # accelerator type -> vendor
    classes: frozenset[str]  # priority class names
    sizes: dict[str, tuple[int, ...]]  # type -> device counts of its schedulable servers


_cache: weakref.WeakKeyDictionary[Database, Reference] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def reference(db: Database, s: Session, fresh: bool = False) -> Reference:
    """The reference data, from the cache unless it is older than `TTL_S` or `fresh` is set
    (then read with `s` and cached)."""
    now = time.monotonic()
    with _lock:
        got = _cache.get(db)
    if got is not None and not fresh and now - got.loaded_at < TTL_S:
        return got
    vendors = tenancy.accelerator_vendors(s)
    sizes = node_store.largest_fit(s, list(vendors))
    ref = Reference(now, vendors, frozenset(tenancy.priority_classes(s)), {t: tuple(c) for t, c in sizes.items()})
    with _lock:
        _cache[db] = ref
    return ref


def cached(db: Database) -> Reference | None:
    """The cached reference data if younger than `TTL_S`, else None: no I/O (the async
    submit path uses it; when it is None that path leaves the submission to the sync one,
    which reads the data afresh)."""
    with _lock:
        got = _cache.get(db)
    return got if got is not None and time.monotonic() - got.loaded_at < TTL_S else None


def forget(db: Database) -> None:
    """Drop the cached entry (after an admin change in this process, so it is seen at once)."""
    with _lock:
        _cache.pop(db, None)
