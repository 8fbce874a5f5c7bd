"""`/readyz` on SQLite and the PostgreSQL server (database and scheduler lease checks), and the
scheduler loop renewing its lease (a SQLite center of its own, a settable clock).

The lease row is shared by the session's center: the readiness test writes and deletes it
itself and leaves none behind.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select

from api.app import create_app
from scheduler.types import RunnerState
from suanli.db.engine import Database
from suanli.db.models import SchedulerLeaseRow
from suanli.db.store import cluster as cluster_store


def test_readyz_follows_the_scheduler_lease(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: /readyz needs no token; with no lease it is 503 problem+json `not_ready`
    naming the scheduler_lease check; a lease renewed within scheduler_lease_timeout_s (30 s)
    makes it 200 with the holder; an older one 503 again; a database that cannot be read is
    503 naming the database check."""
    assert center.settings.scheduler_lease_timeout_s == 30
    with center.db.begin() as s:
        s.execute(delete(SchedulerLeaseRow))
    r = center.client.get("/readyz")
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "not_ready" and [e["field"] for e in r.json()["errors"]] == ["scheduler_lease"]
    with center.db.begin() as s:
        cluster_store.renew_lease(s, "test-host:1", datetime.now(UTC) - timedelta(seconds=5))
    r = center.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["scheduler"], r.json()["checks"]["database"]["ok"]) == ("ready", "test-host:1", True)
    with center.db.begin() as s:
        cluster_store.renew_lease(s, "test-host:2", datetime.now(UTC) - timedelta(seconds=31))
        assert s.scalar(select(func.count()).select_from(SchedulerLeaseRow)) == 1
    r = center.client.get("/readyz")
    assert r.status_code == 503 and "test-host:2" in r.json()["detail"]
    with center.db.begin() as s:
        s.execute(delete(SchedulerLeaseRow))
    broken = Database(f"sqlite:///{center.settings.data_dir / 'nowhere' / 'x.db'}")
    with AppOn(center, broken) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and [e["field"] for e in r.json()["errors"]] == ["database", "scheduler_lease"]


class AppOn:
    """The app on another database (a context manager closing both)."""

    def __init__(self, center, db: Database) -> None:  # type: ignore[no-untyped-def]
        from fastapi.testclient import TestClient

        self.db = db
        self.client = TestClient(create_app(center.settings, db), raise_server_exceptions=False)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.db.dispose()


class IdleLauncher:
    """Nothing to launch: the loop cycles over an empty queue."""

    def launch(self, spec: object) -> None:
        raise AssertionError("nothing should start")

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        return {}

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        pass

    def release(self, job_id: int, ranks: int) -> None:
        pass


def test_scheduler_loop_renews_its_lease(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a completed cycle renews the lease (holder host:pid, the loop's time), at
    most every lease_renew_s; /readyz turns 200 after the first cycle."""
    from scheduler.loop import LoopConfig, SchedulerLoop
    from tests.conftest import make_center

    class Clock:
        t = datetime.now(UTC)

        def now(self) -> datetime:
            return self.t

    c = make_center("", tmp_path, "sqlite")
    try:
        clock = Clock()
        loop = SchedulerLoop(c.db, IdleLauncher(), LoopConfig(c.settings.jobs_dir, lease_renew_s=10), clock=clock)  # type: ignore[arg-type]
        assert c.client.get("/readyz").status_code == 503

        def lease() -> tuple[str, datetime]:
            with c.db.begin() as s:
                row = s.get(SchedulerLeaseRow, "scheduler")
                assert row is not None
                return row.holder, row.renewed_at

        loop.cycle()
        first = clock.t
        holder, at = lease()
        assert holder == f"{socket.gethostname()}:{os.getpid()}" and at == first
        assert c.client.get("/readyz").status_code == 200
        clock.t = first + timedelta(seconds=9)
        loop.cycle()
        assert lease()[1] == first  # not yet: at most every lease_renew_s
        clock.t = first + timedelta(seconds=10)
        loop.cycle()
        assert lease()[1] == clock.t
        loop.lease.release()  # a clean stop: /readyz says so instead of an absurd age
        r = c.client.get("/readyz")
        assert r.status_code == 503 and "released its lease" in r.text, r.text
    finally:
        c.client.close()
        c.db.dispose()
