"""The async submit path on PostgreSQL (`suanli.fastsubmit` through `suanli.db.apool`), used
when the API runs under its lifespan (uvicorn; here `TestClient` as a context manager or the
lifespan entered by hand): it writes the same job, event and answer as the sync path, leaves
every refusal and replay to the sync path (same answers), and concurrent retries with one
Idempotency-Key still create one job. On SQLite there is no async pool. Also the pool's own
rules: at most `max_size` connections, a connection left inside a transaction is closed, not
reused, and a closed pool refuses.

The bare `center.client` (no lifespan) is the sync path: the reference to compare with.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from suanli import refcache
from suanli.db.apool import AsyncPool, PoolClosed, conninfo
from suanli.db.models import JobEventRow, JobRow

A100 = "nvidia-a100-80g"


def spec(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"name": "fast", "resources": {"accelerator": A100, "cpus_per_node": 2, "memory_per_node": 512},
                         "command": "python train.py --lr 0.1", "env": {"A": "1"}, "time_limit": "30m"}
    s.update(over)
    return s


def warm_reference(center) -> None:  # type: ignore[no-untyped-def]
    """The async path takes a submission only with fresh cached reference data (else the sync
    path reads it): load it, so the next submissions go the async way."""
    with center.db.begin() as s:
        refcache.reference(center.db, s, fresh=True)


def postgres_only(center) -> None:  # type: ignore[no-untyped-def]
    if center.backend != "postgres":
        pytest.skip("the async path exists only on PostgreSQL")


def row(center, job_id: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        r = s.execute(select(JobRow.__table__).where(JobRow.id == job_id)).mappings().one()
        events = s.execute(select(JobEventRow.from_status, JobEventRow.to_status, JobEventRow.reason)
                           .where(JobEventRow.job_id == job_id)).all()
    return dict(r) | {"events": [tuple(e) for e in events]}


def test_async_path_writes_and_answers_as_the_sync_path(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: the same spec submitted through the async path and through the sync path
    gives the same stored row (every column but id, time and key), the same event and the
    same answer (but id and time); the async answer is what GET reads back; and the async
    path really served it (its pool opened a connection)."""
    postgres_only(center)
    m = center.new_org()
    h = {"Authorization": f"Bearer {m.token}"}
    sync = center.client.post("/v1/jobs", json=spec(), headers=h | {"Idempotency-Key": uuid.uuid4().hex})
    assert sync.status_code == 201, sync.text
    app = create_app(center.settings, center.db)
    with TestClient(app, raise_server_exceptions=False) as c:
        warm_reference(center)
        fast = c.post("/v1/jobs", json=spec(), headers=h | {"Idempotency-Key": uuid.uuid4().hex})
        assert fast.status_code == 201, fast.text
        assert app.state.submit_pool.size >= 1
        assert c.get(f"/v1/jobs/{fast.json()['id']}", headers=h).json() == fast.json()
    a, b = sync.json(), fast.json()
    assert b["id"] > a["id"]
    for k in ("id", "submitted_at"):
        a.pop(k), b.pop(k)
    assert a == b and b["status"] == "PENDING" and b["user"] == m.user
    ra, rb = row(center, sync.json()["id"]), row(center, fast.json()["id"])
    for k in ("id", "submitted_at", "idempotency_key"):
        ra.pop(k), rb.pop(k)
    assert ra == rb and rb["events"] == [(None, "PENDING", f"submitted by {m.user}")]
    assert app.state.submit_pool is None  # closed with the lifespan


async def _retries(center, m, body: dict[str, Any], key: str, n: int) -> tuple[list[httpx.Response], int]:  # type: ignore[no-untyped-def]
    app = create_app(center.settings, center.db)
    async with app.router.lifespan_context(app):
        warm_reference(center)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            h = {"Authorization": f"Bearer {m.token}", "Idempotency-Key": key}
            answers = await asyncio.gather(*(c.post("/v1/jobs", json=body, headers=h) for _ in range(n)))
        return list(answers), app.state.submit_pool.size


def test_concurrent_retries_with_one_key_create_one_job(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: 12 concurrent submissions with one Idempotency-Key on the async path create
    exactly one job: one 201, eleven 200 replays (`Idempotent-Replayed: true`) of that same
    job, one row with the key; then the key with another spec is 409 idempotency_key_reused."""
    postgres_only(center)
    m = center.new_org()
    key = uuid.uuid4().hex
    answers, pool_size = asyncio.run(_retries(center, m, spec(name="retry"), key, 12))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 11 + [201], [r.text for r in answers]
    assert {r.json()["id"] for r in answers} == {answers[0].json()["id"]}
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in answers if r.status_code == 200)
    assert pool_size >= 1
    with center.db.begin() as s:
        assert s.scalar(select(JobRow.id).where(JobRow.idempotency_key == key)) == answers[0].json()["id"]
        assert len(s.scalars(select(JobRow.id).where(JobRow.idempotency_key == key)).all()) == 1
    reused, _ = asyncio.run(_retries(center, m, spec(name="other"), key, 1))
    assert reused[0].status_code == 409 and reused[0].json()["code"] == "idempotency_key_reused"


def test_refusals_on_the_async_path_are_the_sync_answers(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: with the async path on, an unknown project (422 unknown_project), an unknown
    priority class (422) and a bad Idempotency-Key (422) are answered as problem+json exactly as
    the sync path answers them, and none of them writes a job."""
    postgres_only(center)
    m = center.new_org()
    h = {"Authorization": f"Bearer {m.token}"}
    cases = [(spec(project="nope"), {}), (spec(priority_class="nope"), {}), (spec(), {"Idempotency-Key": "has space"})]
    sync = [center.client.post("/v1/jobs", json=b, headers=h | x) for b, x in cases]
    with TestClient(create_app(center.settings, center.db), raise_server_exceptions=False) as c:
        warm_reference(center)
        fast = [c.post("/v1/jobs", json=b, headers=h | x) for b, x in cases]
        listed = c.get("/v1/jobs", headers=h).json()["items"]
    assert [r.status_code for r in fast] == [422, 422, 422]
    assert [(r.status_code, r.json(), r.headers["content-type"]) for r in fast] == \
           [(r.status_code, r.json(), r.headers["content-type"]) for r in sync]
    assert fast[0].json()["code"] == "unknown_project" and listed == []


def test_sqlite_keeps_the_sync_path(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: on SQLite the lifespan makes no async pool and submissions still work (201)."""
    if center.backend != "sqlite":
        pytest.skip("SQLite only")
    app = create_app(center.settings, center.db)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert app.state.submit_pool is None
        r = c.post("/v1/jobs", json=spec(), headers=center.headers(center.new_org().token))
    assert r.status_code == 201, r.text


def test_conninfo() -> None:
    """Invariant: only PostgreSQL URLs (psycopg driver) get a connection string; the driver
    name is dropped for libpq, the rest kept."""
    assert conninfo("sqlite:///x.db") is None
    assert conninfo("postgresql+psycopg://u:p@h:5433/db?sslmode=require") == "postgresql://u:p@h:5433/db?sslmode=require"


def test_pool_bounds_reuses_and_discards(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants of AsyncPool on the real server: 6 concurrent users of a 2-connection pool
    all finish and never see more than 2 connections (the same 2 backends, reused); a
    connection released inside a transaction is closed, not handed out again; a closed pool
    raises PoolClosed."""
    postgres_only(center)
    info = conninfo(center.db.url)
    assert info is not None

    async def main() -> tuple[set[int], int, int, int]:
        pool = AsyncPool(info, max_size=2)
        pids: set[int] = set()
        peak = 0

        async def use() -> None:
            nonlocal peak
            async with pool.connection() as conn:
                peak = max(peak, pool.size)
                pids.add(conn.info.backend_pid)
                await conn.execute("SELECT pg_sleep(0.05)")

        await asyncio.gather(*(use() for _ in range(6)))
        async with pool.connection() as conn:
            await conn.execute("BEGIN")
            left_open = conn.info.backend_pid
        async with pool.connection() as conn:
            after = conn.info.backend_pid
        await pool.close()
        with pytest.raises(PoolClosed):
            async with pool.connection():
                pass
        return pids, peak, left_open, after

    pids, peak, left_open, after = asyncio.run(main())
    assert peak == 2 and len(pids) == 2
    assert left_open in pids and after != left_open
    with psycopg.connect(info) as c:  # the backend released mid-transaction is gone
        assert c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (left_open,)).fetchone() == (0,)
