"""Engines, sessions and migrations.

Invariants:
- SQLite runs in WAL mode with a busy timeout and every transaction starts with
  `BEGIN IMMEDIATE`: writers queue instead of failing with "database is locked" when a
  read transaction later tries to write (the API and the scheduler are separate processes).
- The schema comes only from Alembic (`migrate()`), never from `create_all`.
- Sessions are short: one unit of work each (`with db.begin() as s:`), expire_on_commit off
  so converted domain objects stay usable after commit.
- Inside a unit of work, `savepoint(s)` is a SAVEPOINT: an error inside undoes only what was
  written since it (then propagates); the rest of the unit of work stays and commits. On
  SQLite this is sound only because pysqlite's own transaction handling is off (isolation
  level None, our `BEGIN IMMEDIATE`); with it on, pysqlite's implicit BEGIN/COMMIT breaks
  SAVEPOINT (SQLAlchemy's pysqlite notes, "Serializable isolation / Savepoints").
  On PostgreSQL it is what keeps a transaction usable after one statement failed.
- PostgreSQL: at most `PG_POOL_SIZE` connections per process, all kept open once made; a
  thread that finds them all in use waits for one (up to 30 s). Overflow connections (opened
  for a burst, closed on return) made the API open a new connection, a new server process,
  for about one request in five under load, and one Python process (one GIL) gains nothing
  from more concurrent transactions than this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
PG_POOL_SIZE = 10


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if ":///" in url and not url.endswith(":memory:"):
            Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=PG_POOL_SIZE, max_overflow=0)


class Database:
    """An engine plus its session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._local = threading.local()

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """`with db.begin() as s:` commits on success, rolls back on error.

        Nesting is refused: on SQLite a second `BEGIN IMMEDIATE` from the same thread would
        wait for the first one forever (until the busy timeout)."""
        if getattr(self._local, "open", False):
            raise RuntimeError("nested db.begin() in one thread: finish the outer unit of work first")
        self._local.open = True
        try:
            with self._sessions.begin() as s:
                yield s
        finally:
            self._local.open = False

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def savepoint(s: Session) -> Iterator[Session]:
    """`with savepoint(s):` inside `db.begin()`: on an error, roll back to the SAVEPOINT (only
    this block's writes, pending ORM objects included) and re-raise; on success the block's
    writes are flushed, so a constraint violation surfaces here, not at the outer commit."""
    with s.begin_nested():
        yield s
        s.flush()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` with Alembic."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)
