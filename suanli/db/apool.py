"""A small asyncio pool of psycopg `AsyncConnection`s, for the API's hot PostgreSQL path (job
submission, `suanli.fastsubmit`): it runs on the event loop, with no thread-pool hop.

Invariants:
- Connections are autocommit: a single statement is its own transaction, so a one-statement
  unit of work costs one round trip (no BEGIN, no COMMIT). Durability is PostgreSQL's as for
  any commit (`synchronous_commit` is left as the server has it: on by default).
- At most `max_size` connections are open; acquirers beyond that wait for one to be released
  instead of opening more, so a burst cannot use up PostgreSQL's `max_connections`.
- A connection goes back to the pool only when it is open and idle (not inside a statement or
  a transaction): one whose statement was interrupted, or that failed with a connection
  error, is closed and never handed out again.
- A connection unused for `check_after_s` seconds is checked with an empty query before it is
  handed out (as `pool_pre_ping` does for the sync engine), so a PostgreSQL restart while the
  API was idle does not fail the first requests; under load the check never runs.
- Belongs to the event loop it is used from (the API creates it in its lifespan, on uvicorn's
  loop); `close()` closes the idle connections and stops handing out new ones.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import pq


class PoolClosed(RuntimeError):
    """The pool was closed (the API is shutting down)."""


class AsyncPool:
    """`async with pool.connection() as conn:` — an autocommit `psycopg.AsyncConnection`."""

    def __init__(self, conninfo: str, max_size: int = 8, check_after_s: float = 5.0) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.conninfo, self.max_size, self.check_after_s = conninfo, max_size, check_after_s
        self._idle: list[tuple[psycopg.AsyncConnection, float]] = []  # (connection, last released, monotonic)
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        """Connections open now (idle or in use)."""
        return self._open

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await self._acquire()
        try:
            yield conn
        finally:
            await self._release(conn)

    async def _acquire(self) -> psycopg.AsyncConnection:
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            if self._idle:
                conn, released = self._idle.pop()  # the most recently used: warm caches
                if time.monotonic() - released < self.check_after_s:
                    return conn
                try:
                    await conn.execute("")
                    return conn
                except psycopg.Error:
                    await self._discard(conn)
                    continue
            if self._open < self.max_size:
                self._open += 1
                try:
                    return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # we were woken but leave: pass the turn on
                else:
                    self._waiters.remove(waiter)
                raise

    async def _release(self, conn: psycopg.AsyncConnection) -> None:
        if self._closed or conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await self._discard(conn)
            return
        self._idle.append((conn, time.monotonic()))
        self._wake()

    async def _discard(self, conn: psycopg.AsyncConnection) -> None:
        self._open -= 1
        self._wake()
        try:
            await conn.close()
        except psycopg.Error:
            pass  # already broken: nothing to close cleanly

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections; connections in use are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._open -= 1
            await conn.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # they see `_closed` and raise PoolClosed


def conninfo(url: str) -> str | None:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (`postgresql+psycopg://…`),
    or None for any other database (SQLite keeps the sync path)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "postgresql" or u.get_driver_name() not in ("psycopg", ""):
        return None
    return u.set(drivername="postgresql").render_as_string(hide_password=False)
