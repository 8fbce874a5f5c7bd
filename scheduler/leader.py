"""Leader election for scheduler loops: one database lease with a fencing token.

Invariants:
- At most one loop acts at a time: the one holding the lease row (`scheduler_lease`) with the
  current token. A loop takes the lease only when it is free, expired (not renewed for
  `timeout_s`) or already under its own name, by one compare-and-set UPDATE that adds one to
  the token; it renews only while holder and token are still its own.
- Fencing: every transaction of the leader goes through `FencedDatabase.begin`, whose first
  statement checks holder and token (`cluster_store.fence`, one primary-key read, share-locked
  on PostgreSQL; SQLite transactions are `BEGIN IMMEDIATE`, so nothing can change the row
  before commit either). A loop that lost the lease while paused (GC, a stopped VM, a slow
  cycle) gets `NotLeader` on its next transaction, which rolls back: it changes nothing in
  the database and steps down. Its runner actions after a committed transaction (launching
  what that transaction claimed) are the only effects it can still have, and they match what
  it committed.
- Safety does not depend on clocks; liveness does: a challenger judges expiry by its own
  clock against the holder's `renewed_at`, so hosts should keep their clocks in sync (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli.db.engine import Database
from suanli.db.store import cluster as cluster_store

log = logging.getLogger(__name__)


class NotLeader(Exception):
    """This loop no longer holds the lease (or its token changed): roll back and step down."""


def default_holder() -> str:
    """host:pid — unique among live schedulers (two loops in one process need their own names)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """This loop's view of the lease: `token` is set while it believes it leads."""

    def __init__(self, db: Database, holder: str, timeout_s: float, name: str = cluster_store.LEASE) -> None:
        self.db = db
        self.holder = holder
        self.timeout_s = timeout_s
        self.name = name
        self.token: int | None = None

    @property
    def leading(self) -> bool:
        return self.token is not None

    def acquire(self, now: datetime) -> bool:
        """Try to take the lease (compare-and-set); True when this loop now leads."""
        try:
            with self.db.begin() as s:
                token = cluster_store.acquire_lease(s, self.holder, now, self.timeout_s, self.name)
        except IntegrityError:  # another loop inserted the first row at the same moment
            token = None
        if token is not None:
            log.info("scheduler %s leads (lease %s, token %d)", self.holder, self.name, token)
        self.token = token
        return token is not None

    def renew(self, now: datetime) -> bool:
        """Renew while still ours; on loss, step down and return False."""
        if self.token is None:
            return False
        with self.db.begin() as s:
            ok = cluster_store.renew_lease_if(s, self.holder, self.token, now, self.name)
        if not ok:
            self.step_down("the lease was taken over")
        return ok

    def release(self) -> None:
        """Give the lease up at a clean shutdown, so another loop takes over at once."""
        if self.token is None:
            return
        with self.db.begin() as s:
            cluster_store.release_lease(s, self.holder, self.token, self.name)
        self.token = None

    def step_down(self, why: str) -> None:
        if self.token is not None:
            log.warning("scheduler %s steps down (token %d): %s", self.holder, self.token, why)
        self.token = None

    def verify(self, s: Session) -> None:
        """The fencing check, first statement of a leader's transaction."""
        if self.token is None or not cluster_store.fence(s, self.holder, self.token, self.name):
            raise NotLeader(f"{self.holder} no longer holds lease {self.name} with token {self.token}")


class FencedDatabase(Database):
    """The same engine and sessions as `db`, but every unit of work first checks the lease
    (`Lease.verify`); `NotLeader` rolls it back. Readers that must not be fenced (the lease
    itself) use the plain `Database`."""

    def __init__(self, db: Database, lease: Lease) -> None:  # noqa: D107 - shares db's engine, no new one
        self.url = db.url
        self.engine = db.engine
        self._sessions = db._sessions
        self._local = db._local  # the same nesting guard as the plain database
        self.lease = lease

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with super().begin() as s:
            self.lease.verify(s)
            yield s
