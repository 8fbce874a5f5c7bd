"""Alembic migrations are the only source of the schema and match the ORM models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from suanli.db.engine import Database, migrate
from suanli.db.models import Base


def test_migrations_produce_the_models_schema(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: after `alembic upgrade head` the database has exactly the models' tables,
    columns, types, indexes and constraints (autogenerate finds nothing to do)."""
    with center.db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
        assert "alembic_version" in inspect(conn).get_table_names()


def test_migrate_is_idempotent(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: running the migrations again on a current database changes nothing."""
    migrate(center.db.url)
    with center.db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariant: the embedded database is a SQLite file in WAL mode with foreign keys on."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate(url)
    db = Database(url)
    with db.begin() as s:
        assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_nested_units_of_work_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a nested db.begin() in one thread fails at once instead of deadlocking SQLite."""
    import pytest

    url = f"sqlite:///{tmp_path / 'y.db'}"
    migrate(url)
    db = Database(url)
    with db.begin():
        with pytest.raises(RuntimeError, match="nested"):
            with db.begin():
                pass
    with db.begin():  # the outer one closed cleanly
        pass
    db.dispose()
