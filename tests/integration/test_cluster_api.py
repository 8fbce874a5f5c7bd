"""Nodes (status, health, who sees which job, drain and undrain), the queue overview and
usage over time through the API on SQLite and the PostgreSQL server, and `suanli
nodes|node|queue|usage|admin node` over real HTTP (SQLite only). Readiness is in
test_readiness.py.

The database is shared by the whole session: every test registers servers of an
accelerator type of its own (so no other test's job lands on them and no demo capacity
changes), makes its own orgs, and looks only at its own rows. Jobs are written and moved
through the store (`suanli.db.store.jobs`: insert_job, apply_transition, claim, release);
settled runs are inserted as `BillingRunRow`s directly through the ORM, with the times the
test needs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from typer.testing import CliRunner

from scheduler.types import JobStatus, JobSubmission, Placement, PolicyConfig, Resources, Start, Vendor
from suanli.cli import app as cli_app
from suanli.db.models import AuditRow, BillingRunRow, JobRow, NodeRow, UserRow
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.db.store.snapshot import load_snapshot
from tests.conftest import Member, unique

SHANGHAI = "+08:00"


# ---------------------------------------------------------------------------- helpers


def admin(center) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return center.headers(center.tokens.admin)


def new_type(center) -> str:  # type: ignore[no-untyped-def]
    """An accelerator type of this test only."""
    name = unique("cl-gpu")
    with center.db.begin() as s:
        tenancy.ensure_accelerator_type(s, name, Vendor.NVIDIA)
    return name


def heartbeat_body(accelerator_type: str, devices: int = 4, health: dict[int, str] | None = None) -> dict[str, Any]:
    return {"accelerator_type": accelerator_type, "cpus": 16, "memory_mb": 65536,
            "devices": [{"index": i, "model": "X", "health": (health or {}).get(i, "OK")} for i in range(devices)]}


def new_node(center, accelerator_type: str, devices: int = 4) -> str:  # type: ignore[no-untyped-def]
    name = unique("cl-node")
    r = center.client.put(f"/v1/nodes/{name}/heartbeat", json=heartbeat_body(accelerator_type, devices),
                          headers=center.headers(center.tokens.agent))
    assert r.status_code == 200, r.text
    return name


def written(center) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """What these routes could write: audit rows, nodes (with their drain columns and
    versions), jobs, settled runs."""
    with center.db.begin() as s:
        return (
            s.scalar(select(func.count()).select_from(AuditRow)),
            sorted(s.execute(select(NodeRow.name, NodeRow.status, NodeRow.drain_reason, NodeRow.version)).all()),
            s.scalar(select(func.count()).select_from(JobRow)),
            s.scalar(select(func.count()).select_from(BillingRunRow)),
        )


def audit_after(center, mark: int) -> list[AuditRow]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return list(s.scalars(select(AuditRow).where(AuditRow.id > mark).order_by(AuditRow.id)))


def last_audit(center) -> int:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditRow.id), 0))) or 0)


def insert_job(center, m: Member, accelerator_type: str, devices: int = 1, submitted: datetime | None = None,
               milli: int = 1000) -> int:  # type: ignore[no-untyped-def]
    """A PENDING job of `m`'s org, written by the store."""
    sub = JobSubmission(name="t", project="default", resources=Resources((accelerator_type,), devices_per_node=devices,
                                                                         device_milli=milli),
                        time_limit_s=3600, grace_s=1.0, command="true", working_dir=None, env={})
    with center.db.begin() as s:
        org = tenancy.get_org(s, m.org)
        assert org is not None
        project = tenancy.get_project(s, org.id, "default")
        user = s.scalar(select(UserRow).where(UserRow.name == m.user))
        assert project is not None and user is not None
        return job_store.insert_job(s, org.id, project.id, user, sub, submitted or datetime.now(UTC))


def start_job(center, job_id: int, node: str, devices: tuple[int, ...], accelerator_type: str) -> None:  # type: ignore[no-untyped-def]
    """PENDING → STARTING (claiming the devices) → RUNNING, as the loop does it."""
    now = datetime.now(UTC)
    with center.db.begin() as s:
        node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == node))
        assert job_store.apply_transition(s, job_id, 1, JobStatus.PENDING, JobStatus.STARTING, "test", now,
                                          accelerator_type=accelerator_type, scheduled_at=now)
        job_store.claim(s, job_id, Start(job_id, accelerator_type, (Placement(node, devices),), "test"), {node: node_id})
        assert job_store.apply_transition(s, job_id, 2, JobStatus.STARTING, JobStatus.RUNNING, "test", now, started_at=now)


def end_job(center, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """RUNNING → SUCCEEDED and its devices released, in one transaction."""
    now = datetime.now(UTC)
    with center.db.begin() as s:
        version = s.scalar(select(JobRow.version).where(JobRow.id == job_id))
        assert job_store.apply_transition(s, job_id, version, JobStatus.RUNNING, JobStatus.SUCCEEDED, "test", now,
                                          ended_at=now, exit_code=0)
        job_store.release(s, job_id)


def cancel_pending(center, job_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    with center.db.begin() as s:
        for j in job_ids:
            version = s.scalar(select(JobRow.version).where(JobRow.id == j))
            job_store.apply_transition(s, j, version, JobStatus.PENDING, JobStatus.CANCELLED, "test", now, ended_at=now)


def schedulable(center, node: str) -> bool:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        snap = load_snapshot(s, datetime.now(UTC), PolicyConfig(), 7 * 24 * 3600).snapshot
    return next(n for n in snap.nodes if n.name == node).schedulable


def get_node(center, name: str, token: str | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = center.client.get(f"/v1/nodes/{name}", headers=center.headers(token or center.tokens.admin))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- nodes: drain and undrain


def test_drain_and_undrain(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: draining an empty server makes it DRAINED with reason, who and when shown,
    one `node.drain` audit row, no longer schedulable for the policy and out of the guarantee
    capacity; undraining makes it READY and schedulable again with one `node.undrain` row.
    Draining twice is 409 `node_drained`, undraining a server that is not drained 409
    `node_not_drained`; a member 403; an unknown server 404; no or an empty reason 422 —
    and none of these writes anything."""
    t = new_type(center)
    node = new_node(center, t, devices=4)
    assert get_node(center, node)["status"] == "READY" and schedulable(center, node)
    with center.db.begin() as s:
        assert tenancy.capacity_by_type(s).get(t) == 4
    mark = last_audit(center)
    r = center.client.post(f"/v1/admin/nodes/{node}/drain", json={"reason": "NVLink errors"}, headers=admin(center))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["drain"]["reason"], body["drain"]["by"]) == ("DRAINED", "NVLink errors", "admin")
    assert abs((datetime.fromisoformat(body["drain"]["at"]) - datetime.now(UTC)).total_seconds()) < 60
    assert get_node(center, node, center.tokens.member)["drain"]["reason"] == "NVLink errors"  # shown to everyone
    rows = audit_after(center, mark)
    assert [(a.actor, a.action, a.target, a.before, a.after) for a in rows] == [
        ("admin", "node.drain", f"node:{node}", {"status": "READY"}, {"status": "DRAINED", "reason": "NVLink errors"})]
    assert not schedulable(center, node)
    with center.db.begin() as s:
        assert tenancy.capacity_by_type(s).get(t, 0) == 0  # drained servers promise nothing
    # A heartbeat does not undo a drain.
    center.client.put(f"/v1/nodes/{node}/heartbeat", json=heartbeat_body(t), headers=center.headers(center.tokens.agent))
    assert get_node(center, node)["status"] == "DRAINED"

    before = written(center)
    r = center.client.post(f"/v1/admin/nodes/{node}/drain", json={"reason": "again"}, headers=admin(center))
    assert r.status_code == 409 and r.json()["code"] == "node_drained"
    r = center.client.post(f"/v1/admin/nodes/{node}/drain", json={"reason": "x"}, headers=center.headers())
    assert r.status_code == 403
    r = center.client.post(f"/v1/admin/nodes/{node}/undrain", headers=center.headers())
    assert r.status_code == 403
    r = center.client.post("/v1/admin/nodes/no-such-node/drain", json={"reason": "x"}, headers=admin(center))
    assert r.status_code == 404 and r.json()["code"] == "node_not_found"
    assert center.client.get("/v1/nodes/no-such-node", headers=admin(center)).json()["code"] == "node_not_found"
    for bad in ({}, {"reason": ""}, {"reason": "x" * 501}, {"reason": "x", "force": True}):
        r = center.client.post(f"/v1/admin/nodes/{node}/drain", json=bad, headers=admin(center))
        assert r.status_code == 422 and r.json()["errors"], (bad, r.text)
    r = center.client.post(f"/v1/admin/nodes/{node}/drain", json={"reason": "   "}, headers=admin(center))
    assert r.status_code == 422 and r.json()["code"] == "bad_reason"
    assert written(center) == before

    mark = last_audit(center)
    r = center.client.post(f"/v1/admin/nodes/{node}/undrain", headers=admin(center))
    assert r.status_code == 200 and (r.json()["status"], r.json()["drain"]) == ("READY", None), r.text
    rows = audit_after(center, mark)
    assert [(a.action, a.target, a.before["status"], a.before["reason"], a.after) for a in rows] == [
        ("node.undrain", f"node:{node}", "DRAINED", "NVLink errors", {"status": "READY"})]
    assert schedulable(center, node)
    before = written(center)
    r = center.client.post(f"/v1/admin/nodes/{node}/undrain", headers=admin(center))
    assert r.status_code == 409 and r.json()["code"] == "node_not_drained"
    assert center.client.post("/v1/admin/nodes/no-such-node/undrain", headers=admin(center)).status_code == 404
    assert written(center) == before


def test_draining_until_the_last_job_ends(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a drained server with a running job is DRAINING (the job keeps its
    devices, no new job is placed there); it is DRAINED as soon as the last job's claims are
    released, with nothing else written."""
    t = new_type(center)
    node = new_node(center, t, devices=4)
    m = center.new_org()
    a, b = insert_job(center, m, t, devices=2), insert_job(center, m, t, devices=1)
    start_job(center, a, node, (0, 1), t)
    start_job(center, b, node, (2,), t)
    r = center.client.post(f"/v1/admin/nodes/{node}/drain", json={"reason": "firmware"}, headers=admin(center))
    assert r.status_code == 200 and (r.json()["status"], r.json()["jobs"], r.json()["devices_busy"]) == ("DRAINING", 2, 3)
    assert not schedulable(center, node)
    end_job(center, a)
    n = get_node(center, node)
    assert (n["status"], n["jobs"], n["devices_free"]) == ("DRAINING", 1, 3)
    end_job(center, b)
    n = get_node(center, node)
    assert (n["status"], n["jobs"], n["devices_free"], n["drain"]["reason"]) == ("DRAINED", 0, 4, "firmware")


# ---------------------------------------------------------------------------- nodes: health, visibility


def test_stale_heartbeat_shows_not_ready_and_device_problems_degrade(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a server whose last heartbeat is older than node_heartbeat_timeout_s (60 s
    here: 12 missed beats of 5 s) is NOT_READY with health "down", within it READY; a fresh heartbeat brings it back; a
    device reporting a problem makes health "degraded"; a drained server stays DRAINED
    whatever its heartbeat (health says down)."""
    assert center.settings.node_heartbeat_timeout_s == 60
    t = new_type(center)
    node = new_node(center, t)

    def age(seconds: float) -> None:
        with center.db.begin() as s:
            s.execute(update(NodeRow).where(NodeRow.name == node)
                      .values(last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds)))

    age(30)
    n = get_node(center, node)
    assert (n["status"], n["health"]) == ("READY", "ok") and 29 <= n["heartbeat_age_s"] < 60
    age(61)
    n = get_node(center, node, center.tokens.member)
    assert (n["status"], n["health"]) == ("NOT_READY", "down")
    listed = {x["name"]: x for x in center.client.get("/v1/nodes", headers=center.headers()).json()}
    assert listed[node]["status"] == "NOT_READY"
    r = center.client.put(f"/v1/nodes/{node}/heartbeat", json=heartbeat_body(t, health={2: "XID 79"}),
                          headers=center.headers(center.tokens.agent))
    assert (r.json()["status"], r.json()["health"]) == ("READY", "degraded")
    assert [d["health"] for d in r.json()["devices"]] == ["OK", "OK", "XID 79", "OK"]
    assert r.json()["unhealthy_devices"] == [2]
    center.client.post(f"/v1/admin/nodes/{node}/drain", json={"reason": "bad GPU 2"}, headers=admin(center))
    age(3600)
    n = get_node(center, node)
    assert (n["status"], n["health"]) == ("DRAINED", "down")


def test_members_see_their_own_job_ids_only(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: on a server running jobs of two orgs, a member sees their own org's job
    id and the other org's devices only as busy; a center admin sees both; an agent's
    listing shows no job ids, but the heartbeat's answer (for the node's own agent) shows
    all; shared devices list their jobs."""
    t = new_type(center)
    node = new_node(center, t, devices=4)
    m1, m2 = center.new_org(), center.new_org()
    j1, j2 = insert_job(center, m1, t), insert_job(center, m2, t, devices=2)
    f1, f2 = insert_job(center, m1, t, milli=500), insert_job(center, m2, t, milli=250)
    start_job(center, j1, node, (0,), t)
    start_job(center, j2, node, (1, 2), t)
    with center.db.begin() as s:  # two fractional jobs share device 3
        node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == node))
        now = datetime.now(UTC)
        for j, milli in ((f1, 500), (f2, 250)):
            assert job_store.apply_transition(s, j, 1, JobStatus.PENDING, JobStatus.STARTING, "test", now, accelerator_type=t)
            job_store.claim(s, j, Start(j, t, (Placement(node, (3,)),), "test", device_milli=milli), {node: node_id})
    try:
        def devices(token: str) -> list[tuple[bool, list[int], bool]]:
            n = get_node(center, node, token)
            listed = next(x for x in center.client.get("/v1/nodes", headers=center.headers(token)).json() if x["name"] == node)
            assert {k: v for k, v in listed.items() if k != "heartbeat_age_s"} == \
                {k: v for k, v in n.items() if k != "heartbeat_age_s"}
            assert n["devices_busy"] == 4 and n["devices_free"] == 0 and n["jobs"] == 4
            return [(d["busy"], d["job_ids"], d["shared"]) for d in n["devices"]]

        assert devices(m1.token) == [(True, [j1], False), (True, [], False), (True, [], False), (True, [f1], True)]
        assert devices(m2.token) == [(True, [], False), (True, [j2], False), (True, [j2], False), (True, [f2], True)]
        assert devices(center.tokens.admin) == [(True, [j1], False), (True, [j2], False), (True, [j2], False),
                                                (True, sorted([f1, f2]), True)]
        assert devices(center.tokens.agent) == [(True, [], False)] * 3 + [(True, [], True)]
        n = get_node(center, node, m1.token)
        assert [d["job_id"] for d in n["devices"]] == [j1, None, None, f1]
        hb = center.client.put(f"/v1/nodes/{node}/heartbeat", json=heartbeat_body(t),
                               headers=center.headers(center.tokens.agent)).json()
        assert [d["job_ids"] for d in hb["devices"]] == [[j1], [j2], [j2], sorted([f1, f2])]
    finally:
        end_job(center, j1)
        end_job(center, j2)
        with center.db.begin() as s:
            for j in (f1, f2):
                job_store.apply_transition(s, j, 2, JobStatus.STARTING, JobStatus.FAILED, "test", datetime.now(UTC))
                job_store.release(s, j)


# ---------------------------------------------------------------------------- queue


def test_queue_overview(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: pending jobs are grouped by org and accepted types with their devices,
    oldest wait and median estimated wait (over the jobs with an estimate); jobs holding
    devices by org and type; a member sees their own org by name and every other org only
    folded into one group (no other org's name appears anywhere); a center admin sees each
    org by name; totals add up."""
    t = new_type(center)
    node = new_node(center, t, devices=8)
    m1, m2 = center.new_org(), center.new_org()
    now = datetime.now(UTC)
    a = insert_job(center, m1, t, devices=2, submitted=now - timedelta(seconds=600))
    b = insert_job(center, m1, t, devices=2, submitted=now - timedelta(seconds=60))
    c = insert_job(center, m1, t, devices=1, submitted=now - timedelta(seconds=30), milli=500)
    d = insert_job(center, m2, t, devices=4, submitted=now - timedelta(seconds=1200))
    e = insert_job(center, m2, t, devices=1)
    run = insert_job(center, m2, t, devices=3)
    start_job(center, run, node, (0, 1, 2), t)
    with center.db.begin() as s:
        for j, ahead in ((a, 100), (b, 300), (c, 1000), (d, -50)):  # a past estimate counts as 0
            s.execute(update(JobRow).where(JobRow.id == j).values(estimated_start_at=now + timedelta(seconds=ahead)))
    try:
        r = center.client.get("/v1/queue", headers=center.headers(m1.token))
        assert r.status_code == 200, r.text
        q = r.json()
        assert m2.org not in r.text
        mine = [g for g in q["pending"] if g["accelerator_types"] == t]
        assert [(g["org"], g["jobs"], g["devices"], g["estimated_jobs"]) for g in mine] == [(m1.org, 3, 4.5, 3), (None, 2, 5.0, 1)]
        assert 600 <= mine[0]["oldest_wait_s"] < 660 and 1200 <= mine[1]["oldest_wait_s"] < 1260
        assert 290 <= mine[0]["median_estimated_wait_s"] <= 300 and mine[1]["median_estimated_wait_s"] == 0
        assert [(g["org"], g["jobs"], g["devices"]) for g in q["running"] if g["accelerator_type"] == t] == [(None, 1, 3.0)]
        assert q["pending_jobs"] == sum(g["jobs"] for g in q["pending"])
        assert q["running_jobs"] == sum(g["jobs"] for g in q["running"])
        assert all(g["org"] in (m1.org, None) for g in q["pending"] + q["running"])
        q = center.client.get("/v1/queue", headers=admin(center)).json()
        mine = [(g["org"], g["jobs"], g["devices"]) for g in q["pending"] if g["accelerator_types"] == t]
        assert sorted(mine) == sorted([(m1.org, 3, 4.5), (m2.org, 2, 5.0)])
        assert [(g["org"], g["jobs"]) for g in q["running"] if g["accelerator_type"] == t] == [(m2.org, 1)]
        assert center.client.get("/v1/queue").status_code == 401
    finally:
        cancel_pending(center, [a, b, c, d, e])
        end_job(center, run)


# ---------------------------------------------------------------------------- usage


def add_run(center, m: Member, accelerator_type: str, settled: str, devices: int, minutes: int, cost_fen: int) -> None:  # type: ignore[no-untyped-def]
    """A settled run of a job of `m`'s org, inserted through the ORM (the times matter here,
    not how the run was billed)."""
    job_id = insert_job(center, m, accelerator_type, devices=devices)
    at = datetime.fromisoformat(settled)
    with center.db.begin() as s:
        job = s.get(JobRow, job_id)
        assert job is not None
        s.add(BillingRunRow(job_id=job_id, run=0, org_id=job.org_id, project_id=job.project_id, user_id=job.user_id,
                            accelerator_type=accelerator_type, devices_milli=devices * 1000,
                            started_at=at - timedelta(minutes=minutes), ended_at=at, duration_ms=minutes * 60_000,
                            price_fen_per_device_hour=1200, cost_fen=cost_fen, cash_fen=cost_fen, subsidy_fen=0,
                            programs={}, center_fault=False, settled_at=at))
    cancel_pending(center, [job_id])


def test_usage_buckets_follow_the_billing_day(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: runs are summed (runs, device-hours, cost) per calendar day or hour of the
    billing time zone (Asia/Shanghai), by the time they were settled: 15:59:59Z is the 1st,
    16:00:00Z already the 2nd; buckets are cut to the window; grouping by org, pool or type
    gives the same sums; members see only their org, center admins every org; an agent is
    refused."""
    assert center.settings.billing_timezone == "Asia/Shanghai"
    t = new_type(center)
    pool = unique("cl-pool")
    with center.db.begin() as s:
        tenancy.get_or_create_pool(s, pool)
    m, other = center.new_org(pool=pool), center.new_org(pool=pool)
    add_run(center, m, t, "2026-03-01T15:30:00+00:00", devices=2, minutes=60, cost_fen=2400)  # 23:30 on the 1st
    add_run(center, m, t, "2026-03-01T15:59:59+00:00", devices=1, minutes=60, cost_fen=1200)  # 23:59:59 on the 1st
    add_run(center, m, t, "2026-03-01T16:00:00+00:00", devices=4, minutes=15, cost_fen=1200)  # 00:00 on the 2nd
    add_run(center, m, t, "2026-03-01T16:30:00+00:00", devices=1, minutes=30, cost_fen=600)  # 00:30 on the 2nd
    add_run(center, other, t, "2026-03-02T03:00:00+00:00", devices=8, minutes=60, cost_fen=9600)
    add_run(center, m, t, "2026-03-03T00:00:00+08:00", devices=1, minutes=60, cost_fen=1200)  # at `to`: left out
    window = {"from": f"2026-03-01T00:00:00{SHANGHAI}", "to": f"2026-03-03T00:00:00{SHANGHAI}"}
    day1, day2 = f"2026-03-01T00:00:00{SHANGHAI}", f"2026-03-02T00:00:00{SHANGHAI}"

    def points(u: dict[str, Any]) -> list[tuple[str, str, str, int, float, int]]:
        return [(p["start"], p["end"], p["group"], p["runs"], p["device_hours"], p["cost_fen"]) for p in u["points"]]

    before = written(center)
    r = center.client.get("/v1/usage", params={**window, "group_by": "org", "step": "day"}, headers=center.headers(m.token))
    assert r.status_code == 200, r.text
    u = r.json()
    assert (u["group_by"], u["step"], u["timezone"], u["from"], u["to"]) == ("org", "day", "Asia/Shanghai", day1,
                                                                            f"2026-03-03T00:00:00{SHANGHAI}")
    assert points(u) == [(day1, day2, m.org, 2, 3.0, 3600), (day2, f"2026-03-03T00:00:00{SHANGHAI}", m.org, 2, 1.5, 1800)]
    assert [(x["group"], x["runs"], x["device_hours"], x["cost_fen"], x["cost_yuan"]) for x in u["totals"]] == [
        (m.org, 4, 4.5, 5400, "54.00")]
    for by, group in (("pool", pool), ("type", t)):
        g = center.client.get("/v1/usage", params={**window, "group_by": by}, headers=center.headers(m.token)).json()
        assert [p[2:] for p in points(g)] == [(group, 2, 3.0, 3600), (group, 2, 1.5, 1800)]
    every = center.client.get("/v1/usage", params={**window, "group_by": "type"}, headers=admin(center)).json()
    assert [p[2:] for p in points(every) if p[2] == t] == [(t, 2, 3.0, 3600), (t, 3, 9.5, 11400)]
    by_org = center.client.get("/v1/usage", params={**window, "group_by": "org"}, headers=admin(center)).json()
    assert {(p[2], p[3]) for p in points(by_org) if p[2] in (m.org, other.org)} == {(m.org, 2), (other.org, 1)}
    # By hour, around midnight in Shanghai; the window's ends cut the first and last bucket.
    r = center.client.get("/v1/usage", params={"from": f"2026-03-01T23:10:00{SHANGHAI}", "to": f"2026-03-02T00:45:00{SHANGHAI}",
                                               "step": "hour", "group_by": "org"}, headers=center.headers(m.token))
    assert points(r.json()) == [
        (f"2026-03-01T23:10:00{SHANGHAI}", day2, m.org, 2, 3.0, 3600),
        (day2, f"2026-03-02T00:45:00{SHANGHAI}", m.org, 2, 1.5, 1800)]
    # All four runs were settled on March 1st in UTC; the billing day splits them.
    r = center.client.get("/v1/usage", params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"},
                          headers=center.headers(m.token))
    assert [(p[0], p[3]) for p in points(r.json())] == [(f"2026-03-01T08:00:00{SHANGHAI}", 2), (day2, 2)]
    assert center.client.get("/v1/usage", params=window, headers=center.headers(center.tokens.agent)).status_code == 403
    assert written(center) == before


def test_usage_refuses_bad_input(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an unknown group_by or step, a time without a zone or outside 2000-2199,
    from not before to, and a window longer than 31 days by hour or 366 by day are 422
    naming the field (never a 500 from a date overflow), and nothing is written."""
    before = written(center)
    for params, fld, code in (
        ({"group_by": "user"}, "group_by", None),
        ({"step": "week"}, "step", None),
        ({"from": "2026-03-01T00:00:00"}, "from", None),
        ({"from": "2026-03-05T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from", "bad_window"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from", "bad_window"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "step": "hour"}, "from", "window_too_long"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from", "window_too_long"),
        ({"to": "0001-01-01T00:00:00Z"}, "to", "time_out_of_range"),
        ({"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T00:00:00Z", "step": "hour"}, "from", "time_out_of_range"),
    ):
        r = center.client.get("/v1/usage", params=params, headers=admin(center))
        assert r.status_code == 422, (params, r.text)
        assert fld in [e["field"] for e in r.json()["errors"]], (params, r.text)
        assert code is None or r.json()["code"] == code
    assert written(center) == before


# ---------------------------------------------------------------------------- CLI over HTTP






def test_cluster_cli_over_http(center, server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli nodes|node|queue|usage` and `suanli admin node drain|undrain` work
    through the real API; `--json` prints only JSON; exit codes are 0 ok, 2 bad input naming
    the option or field, 3 for a member draining, 4 unknown node, 5 conflict; never a
    traceback."""
    t = new_type(center)
    node = new_node(center, t, devices=2)
    m = center.new_org()
    add_run(center, m, t, "2026-04-01T01:00:00+00:00", devices=2, minutes=90, cost_fen=3600)

    def run(*args: str, token: str = center.tokens.admin, expect: int = 0) -> Any:
        env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "250"}
        result = CliRunner().invoke(cli_app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    listed = json.loads(run("nodes", "--json", token=m.token).stdout)
    assert next(n for n in listed if n["name"] == node)["status"] == "READY"
    table = run("nodes", token=m.token).stdout
    assert node in table and "HEALTH" in table
    shown = run("node", node).stdout
    assert node in shown and "READY" in shown and "registered with 2 devices" in shown
    assert "UNHEALTHY" in run("admin", "node", "list").stdout
    assert [e["kind"] for e in json.loads(run("admin", "node", "events", node, "--json").stdout)] == ["registered"]
    run("admin", "node", "events", "no-such-node", expect=4)
    run("node", "no-such-node", expect=4)
    drained = json.loads(run("admin", "node", "drain", node, "--reason", "PSU swap", "--json").stdout)
    assert (drained["status"], drained["drain"]["reason"]) == ("DRAINED", "PSU swap")
    assert "PSU swap" in run("node", node, token=m.token).stdout
    assert "DRAINED" in run("nodes").stdout
    run("admin", "node", "drain", node, "--reason", "again", expect=5)
    run("admin", "node", "drain", node, "--reason", "x", token=m.token, expect=3)
    run("admin", "node", "drain", "no-such-node", "--reason", "x", expect=4)
    bad = run("admin", "node", "drain", node, "--reason", "", expect=2)
    assert "reason" in bad.output
    assert "READY" in run("admin", "node", "undrain", node).stdout
    run("admin", "node", "undrain", node, expect=5)

    q = json.loads(run("queue", "--json", token=m.token).stdout)
    assert {"pending", "running", "pending_jobs"} <= set(q)
    assert "pending:" in run("queue", token=m.token).stdout
    u = json.loads(run("usage", "--by", "type", "--from", "2026-04-01T00:00:00+08:00", "--to", "2026-04-02T00:00:00+08:00",
                       "--json", token=m.token).stdout)
    assert [(p["group"], p["runs"], p["device_hours"], p["cost_fen"]) for p in u["points"]] == [(t, 1, 3.0, 3600)]
    text = run("usage", "--by", "type", "--from", "2026-04-01T00:00:00+08:00", "--to", "2026-04-02T00:00:00+08:00",
               token=m.token).stdout
    assert t in text and "¥36.00" in text and "2026-04-01" in text
    hourly = json.loads(run("usage", "--step", "hour", "--from", "2026-04-01T08:00:00+08:00", "--to",
                            "2026-04-01T10:00:00+08:00", "--json", token=m.token).stdout)
    assert [p["start"] for p in hourly["points"]] == ["2026-04-01T09:00:00+08:00"]
    assert "--by" in run("usage", "--by", "user", expect=2).output
    assert "from" in run("usage", "--from", "2026-04-05T00:00:00Z", "--to", "2026-04-01T00:00:00Z", expect=2).output
    assert "--from" in run("usage", "--from", "yesterday", expect=2).output
