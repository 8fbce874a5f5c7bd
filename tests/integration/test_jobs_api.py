"""The jobs API of issue 6 on SQLite and the PostgreSQL server: idempotent submit (also
under 16 concurrent retries), list filters and keyset pages that stay stable while jobs are
submitted, hold/release (and cancel of a held job), admin requeue through the live loop,
cost so far, spec size limits, and the streamed log (`follow=true`).

The `center` database is shared by the session: tests make their own orgs and compare only
their own jobs. The scheduler loop runs only on fresh centers made in the test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from scheduler.types import JobStatus, LaunchSpec, RunnerPhase, RunnerState
from suanli import jobs as service
from suanli.db.models import AuditRow, JobEventRow, JobRow, OrgRow
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.db.store.snapshot import load_snapshot
from suanli.identity import Role, new_token
from scheduler.types import PolicyConfig
from tests.conftest import serve, Member, unique

A100, B910 = "nvidia-a100-80g", "ascend-910b"


def spec(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"name": "j", "resources": {"accelerator": A100, "cpus_per_node": 1, "memory_per_node": 256},
                         "command": "true"}
    s.update(over)
    return s


def counts(center) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return (s.scalar(select(func.count()).select_from(JobRow)), s.scalar(select(func.count()).select_from(JobEventRow)),
                s.scalar(select(func.count()).select_from(AuditRow)))


def add_user(center, org: str, role: Role = Role.MEMBER) -> Member:  # type: ignore[no-untyped-def]
    """Another user (with a token) in an existing org."""
    now, name, token = datetime.now(UTC), unique("user"), new_token()
    with center.db.begin() as s:
        org_id = s.scalar(select(OrgRow.id).where(OrgRow.name == org))
        user = tenancy.create_user(s, name, role, org_id, now)
        tenancy.add_token(s, user.id, token, now)
    return Member(org, name, token)


def advance(center, job_id: int, *path: JobStatus, exit_code: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Move a job along `path` through the store's guarded transitions (no scheduler)."""
    for to in path:
        with center.db.begin() as s:
            job = job_store.get_job(s, job_id)
            assert job is not None
            fields: dict[str, Any] = {"ended_at": datetime.now(UTC), "exit_code": exit_code} if to.terminal else {}
            assert job_store.apply_transition(s, job_id, job.version, job.status, to, "test", datetime.now(UTC), **fields)


# ---------------------------------------------------------------------------- idempotent submit


def test_a_retried_submit_returns_the_same_job(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the first submit with a key is 201; a retry with the same key and spec
    (even as YAML) is 200 with the same job and `Idempotent-Replayed`, writing nothing; the
    same key with another spec is 409 `idempotency_key_reused`, writing nothing; another
    user's identical key is independent; a malformed key is 422 naming the header."""
    m = center.new_org()
    key = str(uuid.uuid4())
    h = {**center.headers(m.token), "Idempotency-Key": key}
    first = center.client.post("/v1/jobs", json=spec(env={"SEED": 1}), headers=h)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    before = counts(center)
    again = center.client.post("/v1/jobs", json=spec(env={"SEED": 1}), headers=h)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    yaml_body = f"name: j\ncommand: 'true'\nenv: {{SEED: '1'}}\nresources: {{accelerator: {A100}, cpus_per_node: 1, memory_per_node: 256}}\n"
    as_yaml = center.client.post("/v1/jobs", content=yaml_body, headers={**h, "Content-Type": "application/yaml"})
    assert as_yaml.status_code == 200 and as_yaml.json()["id"] == first.json()["id"]
    other = center.client.post("/v1/jobs", json=spec(command="false"), headers=h)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    assert str(first.json()["id"]) in other.json()["detail"]
    assert counts(center) == before
    colleague = add_user(center, m.org)
    theirs = center.client.post("/v1/jobs", json=spec(env={"SEED": 1}), headers={**center.headers(colleague.token), "Idempotency-Key": key})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    before = counts(center)
    bad = center.client.post("/v1/jobs", json=spec(), headers={**center.headers(m.token), "Idempotency-Key": "x" * 256})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_idempotency_key"
    assert [e["field"] for e in bad.json()["errors"]] == ["Idempotency-Key"]
    assert counts(center) == before


@pytest.mark.parametrize("skip_first_read", [False, True], ids=["as-is", "insert-race-forced"])
def test_sixteen_concurrent_retries_make_exactly_one_job(center, monkeypatch, skip_first_read: bool) -> None:  # type: ignore[no-untyped-def]
    """Invariant: 16 threads submitting the same spec with the same key at the same moment
    create exactly one job, and all get its id (one of them as created). With the read
    before the insert disabled ("insert-race-forced"), every thread inserts: the unique
    index alone must let one win and turn the others into replays."""
    m = center.new_org()
    with center.db.begin() as s:
        who = tenancy.principal_for_token(s, m.token, datetime.now(UTC))
    assert who is not None
    from api.schemas.jobs import JobSpecIn, submission_from_spec

    sub = submission_from_spec(JobSpecIn.model_validate(spec()), 3600, 86400, 2.0)
    if skip_first_read:
        real, seen = service._earlier, threading.local()

        def earlier_after_insert(*a: Any) -> Any:  # the read inside the insert's transaction sees nothing
            if not getattr(seen, "once", False):
                seen.once = True
                return None
            return real(*a)

        monkeypatch.setattr(service, "_earlier", earlier_after_insert)
    key, barrier = f"k-{uuid.uuid4()}", threading.Barrier(16)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            job, created = service.submit_keyed(center.db, who, sub, key)
            results.append((job.id, created))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 16 and len({j for j, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with center.db.begin() as s:
        assert s.scalar(select(func.count()).select_from(JobRow).where(JobRow.idempotency_key == key)) == 1


# ---------------------------------------------------------------------------- listing


def test_list_filters(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: status (repeatable), project, user, type and since narrow the list to
    exactly the matching jobs of the caller's org; a member naming another org is 403;
    a center admin can name any org; an unknown status or a limit over 500 is 422."""
    m = center.new_org()
    other = add_user(center, m.org)
    r = center.client.post("/v1/admin/projects", json={"org": m.org, "name": "nlp"}, headers=center.headers(center.tokens.admin))
    assert r.status_code in (200, 201), r.text
    mk = lambda who, **kw: center.client.post("/v1/jobs", json=spec(**kw), headers=center.headers(who.token)).json()  # noqa: E731
    a = mk(m)
    b = mk(m, project="nlp")
    c = mk(other, resources={"accelerator": [B910, A100], "cpus_per_node": 1, "memory_per_node": 256})
    d = mk(other, project="nlp")
    center.client.post(f"/v1/jobs/{d['id']}/cancel", headers=center.headers(other.token))
    center.client.post(f"/v1/jobs/{b['id']}/hold", headers=center.headers(m.token))

    def ids(token: str = m.token, **params: Any) -> list[int]:
        r = center.client.get("/v1/jobs", params=params, headers=center.headers(token))
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["items"]]

    assert ids() == [d["id"], c["id"], b["id"], a["id"]]
    assert ids(status=["PENDING"]) == [c["id"], a["id"]]
    assert ids(status=["HELD", "CANCELLED"]) == [d["id"], b["id"]]
    assert ids(project="nlp") == [d["id"], b["id"]]
    assert ids(user=other.user) == [d["id"], c["id"]]
    assert ids(type=B910) == [c["id"]]
    assert ids(type=A100) == [d["id"], c["id"], b["id"], a["id"]]
    assert ids(user=other.user, project="nlp", status=["CANCELLED"]) == [d["id"]]
    assert ids(since=c["submitted_at"]) == [d["id"], c["id"]]
    assert ids(org=m.org) == ids()
    assert ids(center.tokens.admin, org=m.org) == ids()
    foreign = center.client.get("/v1/jobs", params={"org": "city-university"}, headers=center.headers(m.token))
    assert foreign.status_code == 403
    assert center.client.get("/v1/jobs?status=NOPE", headers=center.headers(m.token)).status_code == 422
    assert center.client.get("/v1/jobs?limit=501", headers=center.headers(m.token)).status_code == 422


def expected_order(center, org_id: int, sort: str) -> list[int]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        rows = s.execute(select(JobRow.id, JobRow.submitted_at, JobRow.priority).where(JobRow.org_id == org_id)).all()
    key = {"id": lambda r: (r[0],), "submitted_at": lambda r: (r[1], r[0]),
           "priority": lambda r: (r[2] if r[2] is not None else -1.0, r[0])}[sort]
    return [r[0] for r in sorted(rows, key=key, reverse=True)]


@pytest.mark.parametrize("sort", ["id", "submitted_at", "priority"])
def test_a_page_walk_while_jobs_are_submitted_never_repeats_or_skips_a_job(center, sort: str) -> None:  # type: ignore[no-untyped-def]
    """Invariant: walking the pages of a sort (ties in the sort key included, and jobs with
    no priority) while new jobs are submitted between pages returns every job that existed
    when the walk began exactly once, in the sort's order; a cursor of another sort, or a
    made-up one, is 422 `invalid_cursor`."""
    m = center.new_org()
    with center.db.begin() as s:
        who = tenancy.principal_for_token(s, m.token, datetime.now(UTC))
        org_id = s.scalar(select(OrgRow.id).where(OrgRow.name == m.org))
    assert who is not None
    from api.schemas.jobs import JobSpecIn, submission_from_spec

    sub = submission_from_spec(JobSpecIn.model_validate(spec()), 3600, 86400, 2.0)
    old = [service.submit(center.db, who, sub).id for _ in range(13)]
    tie = datetime.now(UTC) - timedelta(minutes=5)
    with center.db.begin() as s:  # ties on both keys, and jobs without a priority
        s.execute(update(JobRow).where(JobRow.id.in_(old[2:6])).values(submitted_at=tie))
        for i, job_id in enumerate(old):
            prio = None if i % 4 == 3 else [0.5, 0.25, 0.5, 0.75][i % 4]
            s.execute(update(JobRow).where(JobRow.id == job_id).values(priority=prio))
    want = expected_order(center, org_id, sort)
    seen: list[int] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"sort": sort, "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = center.client.get("/v1/jobs", params=params, headers=center.headers(m.token)).json()
        seen += [j["id"] for j in page["items"]]
        service.submit(center.db, who, sub)  # a new job between pages
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [j for j in seen if j in old] == want
    assert len(seen) == len(set(seen))
    first = center.client.get("/v1/jobs", params={"sort": sort, "limit": 2}, headers=center.headers(m.token)).json()
    other_sort = "priority" if sort != "priority" else "id"
    for bad in (first["next_cursor"], "bm90LWEtY3Vyc29y", "!!"):
        s = other_sort if bad == first["next_cursor"] else sort
        r = center.client.get("/v1/jobs", params={"sort": s, "cursor": bad}, headers=center.headers(m.token))
        assert r.status_code == 422 and r.json()["code"] == "invalid_cursor", r.text


# ---------------------------------------------------------------------------- hold / release / cancel


def test_hold_release_and_cancel_of_a_held_job(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the owner holds a pending job (HELD, event and reason name them) and the
    scheduler's snapshot leaves it out; holding again changes nothing; release puts it back
    PENDING with its submit time; releasing a pending job is 409 `job_not_held`; a held job
    cancels to CANCELLED, and a cancelled one cannot be held (409 `job_not_pending`)."""
    m = center.new_org()
    h = center.headers(m.token)
    job = center.client.post("/v1/jobs", json=spec(), headers=h).json()
    held = center.client.post(f"/v1/jobs/{job['id']}/hold", headers=h)
    assert held.status_code == 200 and held.json()["status"] == "HELD" and m.user in held.json()["reason"]
    assert held.json()["reason_code"] == "held"
    with center.db.begin() as s:
        loaded = load_snapshot(s, datetime.now(UTC), PolicyConfig(), 3600.0)
    assert job["id"] not in {p.id for p in loaded.snapshot.pending}
    assert center.client.post(f"/v1/jobs/{job['id']}/hold", headers=h).json()["status"] == "HELD"
    back = center.client.post(f"/v1/jobs/{job['id']}/release", headers=h).json()
    assert back["status"] == "PENDING" and back["submitted_at"] == job["submitted_at"]
    again = center.client.post(f"/v1/jobs/{job['id']}/release", headers=h)
    assert again.status_code == 409 and again.json()["code"] == "job_not_held"
    events = center.client.get(f"/v1/jobs/{job['id']}/events", headers=h).json()
    assert [(e["from_status"], e["to_status"]) for e in events] == [(None, "PENDING"), ("PENDING", "HELD"), ("HELD", "PENDING")]
    center.client.post(f"/v1/jobs/{job['id']}/hold", headers=h)
    gone = center.client.post(f"/v1/jobs/{job['id']}/cancel", headers=h).json()
    assert gone["status"] == "CANCELLED" and gone["ended_at"] is not None
    late = center.client.post(f"/v1/jobs/{job['id']}/hold", headers=h)
    assert late.status_code == 409 and late.json()["code"] == "job_not_pending"


def test_who_may_hold_and_release(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: another org's member gets 404 (hold and release); a colleague who is
    not the owner gets 403; the org's admin and a center admin may, and their actions on
    someone else's job are audited; a member asking for a requeue gets 403."""
    m = center.new_org()
    job = center.client.post("/v1/jobs", json=spec(), headers=center.headers(m.token)).json()
    stranger = center.new_org()
    for action in ("hold", "release"):
        r = center.client.post(f"/v1/jobs/{job['id']}/{action}", headers=center.headers(stranger.token))
        assert r.status_code == 404 and r.json()["code"] == "job_not_found"
    colleague, boss = add_user(center, m.org), add_user(center, m.org, Role.ORG_ADMIN)
    before = counts(center)
    assert center.client.post(f"/v1/jobs/{job['id']}/hold", headers=center.headers(colleague.token)).status_code == 403
    assert counts(center) == before
    assert center.client.post(f"/v1/jobs/{job['id']}/hold", headers=center.headers(boss.token)).json()["status"] == "HELD"
    r = center.client.post(f"/v1/jobs/{job['id']}/release", headers=center.headers(center.tokens.admin))
    assert r.json()["status"] == "PENDING"
    with center.db.begin() as s:
        audit = s.execute(select(AuditRow.actor, AuditRow.action).where(AuditRow.target == f"job:{job['id']}")
                          .order_by(AuditRow.id)).all()
    assert [tuple(a) for a in audit] == [(boss.user, "job.hold"), ("admin", "job.release")]
    for token in (m.token, boss.token):
        r = center.client.post(f"/v1/jobs/{job['id']}/requeue", headers=center.headers(token))
        assert r.status_code == 403
    r = center.client.post(f"/v1/jobs/{job['id']}/requeue", headers=center.headers(center.tokens.admin))
    assert r.status_code == 409 and r.json()["code"] == "job_not_running"


# ---------------------------------------------------------------------------- requeue through the loop


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def now(self) -> datetime:
        return self.t


class StopLauncher:
    """Runners run until stopped; a stopped runner has exited with the stop's reason."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started: dict[int, float] = {}
        self.stops: list[tuple[int, str]] = []
        self.stopped: dict[int, str] = {}

    def launch(self, spec: LaunchSpec) -> None:
        self.started[spec.job_id] = self.clock.now().timestamp()
        self.stopped.pop(spec.job_id, None)

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        out = {}
        for j in jobs:
            if j in self.stopped:
                out[j] = RunnerState(RunnerPhase.EXITED, started_at=self.started[j], ended_at=self.clock.now().timestamp(),
                                     exit_code=143, stopped_by=self.stopped[j])
            else:
                out[j] = RunnerState(RunnerPhase.RUNNING, started_at=self.started[j])
        return out

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        self.stops.append((job_id, reason))
        self.stopped[job_id] = reason

    def release(self, job_id: int, ranks: int) -> None:
        pass


def test_admin_requeue_of_a_running_job_goes_through_preemption(tmp_path: Path) -> None:
    """Invariants (live loop, fresh SQLite center): while running, `cost_so_far_fen` is what
    metering charged (devices × time × price); a center admin's requeue makes the job
    PREEMPTING with a stop deadline and the reason "requeued by admin admin", audited; the
    loop stops the runner as a preemption and the job is PENDING again with its submit
    time and restart_count 1, then starts again; requeueing a pending, a cancelled or a
    `requeue: false` job is 409 with its code."""
    from quota.settlement import run_cost
    from scheduler.loop import LoopConfig, SchedulerLoop
    from tests.conftest import make_center

    c = make_center("", tmp_path, "sqlite")
    clock = Clock()
    launcher = StopLauncher(clock)
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, meter_interval_s=60), clock=clock)
    m, admin = c.new_org(), c.headers(c.tokens.admin)
    job = c.client.post("/v1/jobs", headers=c.headers(m.token), json=spec(
        resources={"accelerator": A100, "devices_per_node": 2, "cpus_per_node": 1, "memory_per_node": 256}, time_limit="2h")).json()
    loop.cycle()
    clock.t += timedelta(seconds=1)
    loop.cycle()
    running = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert running["status"] == "RUNNING" and len(running["nodes"]) == 1 and running["cost_so_far_fen"] == 0
    clock.t += timedelta(minutes=30)
    loop.cycle()  # metered
    metered = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    started = datetime.fromtimestamp(launcher.started[job["id"]], UTC)
    assert metered["cost_so_far_fen"] == run_cost(2, 1000, started, clock.t, running["price_fen_per_device_hour"]) > 0
    r = c.client.post(f"/v1/jobs/{job['id']}/requeue", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "PREEMPTING" and r.json()["reason"] == "requeued by admin admin"
    with c.db.begin() as s:
        assert s.scalar(select(JobRow.stop_by).where(JobRow.id == job["id"])) is not None
        assert s.scalar(select(func.count()).select_from(AuditRow).where(AuditRow.action == "job.requeue")) == 1
    again = c.client.post(f"/v1/jobs/{job['id']}/requeue", headers=admin)
    assert again.status_code == 409 and again.json()["code"] == "job_stopping"
    clock.t += timedelta(seconds=1)
    loop.cycle()  # the reconciler sends the stop as a preemption
    assert (job["id"], "preempt") in launcher.stops
    clock.t += timedelta(seconds=1)
    loop.cycle()  # exited: requeued
    back = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert back["status"] in ("PENDING", "STARTING") and back["restart_count"] == 1
    assert back["submitted_at"] == job["submitted_at"] and back["cost_fen"] > 0
    steps = [(e["from_status"], e["to_status"], e["reason"]) for e in c.client.get(f"/v1/jobs/{job['id']}/events", headers=admin).json()]
    assert ("RUNNING", "PREEMPTING", "requeued by admin admin") in steps and ("PREEMPTING", "PENDING") in [s[:2] for s in steps]
    loop.cycle()
    assert c.client.get(f"/v1/jobs/{job['id']}", headers=admin).json()["status"] in ("STARTING", "RUNNING")
    pending = c.client.post("/v1/jobs", headers=c.headers(m.token), json=spec(resources={"accelerator": A100, "devices_per_node": 8,
                                                                                          "nodes": 2})).json()
    assert c.client.post(f"/v1/jobs/{pending['id']}/requeue", headers=admin).json()["code"] == "job_not_running"
    c.client.post(f"/v1/jobs/{pending['id']}/cancel", headers=c.headers(m.token))
    r = c.client.post(f"/v1/jobs/{pending['id']}/requeue", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "job_finished"
    once = c.client.post("/v1/jobs", headers=c.headers(m.token), json=spec(requeue=False)).json()
    loop.cycle()
    r = c.client.post(f"/v1/jobs/{once['id']}/requeue", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "job_not_requeueable"
    c.db.dispose()


# ---------------------------------------------------------------------------- spec sizes


LIMITS = [
    (spec(command="x" * 65537), "command"),
    (spec(command="中" * 21846), "command"),  # 65,538 bytes of UTF-8 in 21,846 characters
    (spec(env={f"V{i}": "1" for i in range(257)}), "env"),
    (spec(env={"BIG": "v" * 65537}), "env"),
    (spec(name="n" * 129), "name"),
    (spec(project="p" * 65), "project"),
    (spec(priority_class="c" * 33), "priority_class"),
    (spec(working_dir="/" + "d" * 4096), "working_dir"),
]


@pytest.mark.parametrize(("body", "field"), LIMITS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(LIMITS)])
def test_spec_size_limits(center, body: dict[str, Any], field: str) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a spec over a size limit is 422 naming the field, and nothing is written;
    the largest allowed command and env (64 KiB each) are accepted."""
    m = center.new_org()
    before = counts(center)
    r = center.client.post("/v1/jobs", json=body, headers=center.headers(m.token))
    assert r.status_code == 422 and field in [e["field"] for e in r.json()["errors"]], r.text
    assert counts(center) == before
    ok = center.client.post("/v1/jobs", json=spec(command="y" * 65536, env={"BIG": "v" * 65536}), headers=center.headers(m.token))
    assert ok.status_code == 201, ok.text[:300]


# ---------------------------------------------------------------------------- logs, followed




def log_file(center, job_id: int) -> Path:  # type: ignore[no-untyped-def]
    path = service.log_path(center.settings.jobs_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_follow_streams_lines_as_written_and_ends_with_the_job(center, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `logs?follow=true` sends each line soon after it is appended (before the
    next one is written), from `offset`, and ends by itself once the job has ended, with
    every byte sent once. No runner here: the test appends to the job's log file itself
    and advances the job's status through the store. A client that goes away stops the
    server's polling."""
    m = center.new_org()
    job = center.client.post("/v1/jobs", json=spec(), headers=center.headers(m.token)).json()
    path = log_file(center, job["id"])
    path.write_bytes(b"old line\n")
    got: list[tuple[float, bytes]] = []
    with serve(center) as url:
        def read() -> None:
            with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/logs", params={"follow": "true", "offset": 4},
                              headers=center.headers(m.token), timeout=httpx.Timeout(30, read=None)) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
                for chunk in r.iter_bytes():
                    got.append((time.monotonic(), chunk))

        reader = threading.Thread(target=read)
        reader.start()
        advance(center, job["id"], JobStatus.STARTING, JobStatus.RUNNING)
        written = []
        for i in range(3):
            time.sleep(1.2)
            with path.open("ab") as f:
                f.write(f"line {i}\n".encode())
            written.append(time.monotonic())
        time.sleep(1.2)
        assert reader.is_alive(), "the stream ended while the job was running"
        with path.open("ab") as f:
            f.write(b"last words\n")
        advance(center, job["id"], JobStatus.SUCCEEDED)
        reader.join(timeout=10)
        assert not reader.is_alive(), "the stream did not end after the job ended"
        assert b"".join(c for _, c in got) == b"line\nline 0\nline 1\nline 2\nlast words\n"
        for i, at in enumerate(written[1:], 1):  # line i-1 arrived before line i was written
            assert any(f"line {i - 1}".encode() in c and t < at for t, c in got), (i, got)

        other = center.client.post("/v1/jobs", json=spec(), headers=center.headers(m.token)).json()
        polls = {"n": 0}
        real_get = service.get

        def counting_get(db, who, job_id):  # type: ignore[no-untyped-def]
            if job_id == other["id"]:
                polls["n"] += 1
            return real_get(db, who, job_id)

        monkeypatch.setattr(service, "get", counting_get)
        with httpx.stream("GET", f"{url}/v1/jobs/{other['id']}/logs", params={"follow": "true"},
                          headers=center.headers(m.token), timeout=httpx.Timeout(30, read=None)) as r:
            assert r.status_code == 200
            time.sleep(1.2)
        assert polls["n"] >= 2  # it was polling while we listened
        time.sleep(1.5)
        after_close = polls["n"]
        time.sleep(1.5)
        assert polls["n"] == after_close, "the server kept polling for a client that left"
