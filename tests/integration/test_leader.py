"""Leader election with fencing: two real `SchedulerLoop`s on one real database (a fresh
SQLite file, and a fresh PostgreSQL database), one settable clock.

The launcher is scripted (it stands for the Ray cluster both schedulers share; the Ray
suites run the real one): each job "runs" from its launch until the test marks it exited.
What is checked is the database side of leadership: who may act, when the other takes
over, and that a loop that lost the lease can change nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from scheduler.leader import Lease, NotLeader
from scheduler.loop import LoopConfig, SchedulerLoop
from scheduler.policy import decide
from scheduler.recovery import recover
from scheduler.types import Decisions, LaunchSpec, RunnerPhase, RunnerState, Snapshot
from suanli.db.store import jobs as job_store
from suanli.db.models import BillingRunRow, DeviceClaimRow, JobEventRow, LedgerTxnRow, SchedulerLeaseRow
from tests.conftest import Center

TIMEOUT_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def now(self) -> datetime:
        return self.t


class SharedRay:
    """The runners both schedulers see: launched jobs run until `exit(job)`; `calls` records
    which scheduler asked for what."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started: dict[int, float] = {}
        self.exited: set[int] = set()
        self.calls: list[tuple[str, str, int]] = []

    def exit(self, job_id: int) -> None:
        self.exited.add(job_id)

    def state(self, job_id: int) -> RunnerState:
        if job_id not in self.started:
            return RunnerState(RunnerPhase.LOST, error="no runner")
        t0 = self.started[job_id]
        if job_id in self.exited:
            return RunnerState(RunnerPhase.EXITED, started_at=t0, ended_at=t0 + 60, exit_code=0)
        return RunnerState(RunnerPhase.RUNNING, started_at=t0)


class As:
    """One scheduler's launcher onto `SharedRay`."""

    def __init__(self, ray: SharedRay, who: str) -> None:
        self.ray, self.who = ray, who

    def launch(self, spec: LaunchSpec) -> None:
        self.ray.calls.append((self.who, "launch", spec.job_id))
        self.ray.started[spec.job_id] = self.ray.clock.now().timestamp()

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        for j in jobs:
            self.ray.calls.append((self.who, "poll", j))
        return {j: self.ray.state(j) for j in jobs}

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        self.ray.calls.append((self.who, "stop", job_id))

    def release(self, job_id: int, ranks: int) -> None:
        self.ray.calls.append((self.who, "release", job_id))


def pair(c: Center, policy_a: Any = None, policy_b: Any = None) -> tuple[Clock, SharedRay, SchedulerLoop, SchedulerLoop]:
    clock = Clock()
    ray = SharedRay(clock)
    cfg = LoopConfig(c.settings.jobs_dir, lease_timeout_s=TIMEOUT_S, lease_renew_s=TIMEOUT_S / 3, meter_interval_s=0)
    extra_a = {"policy": policy_a} if policy_a else {}
    extra_b = {"policy": policy_b} if policy_b else {}
    a = SchedulerLoop(c.db, As(ray, "a"), cfg, clock=clock, holder="sched-a", **extra_a)  # type: ignore[arg-type]
    b = SchedulerLoop(c.db, As(ray, "b"), cfg, clock=clock, holder="sched-b", **extra_b)  # type: ignore[arg-type]
    return clock, ray, a, b


def submit(c: Center, token: str, name: str = "j") -> int:
    r = c.client.post("/v1/jobs", headers=c.headers(token), json={
        "name": name, "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1, "memory_per_node": 256},
        "command": "true", "time_limit": "1h"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def status(c: Center, job_id: int) -> str:
    with c.db.begin() as s:
        job = job_store.get_job(s, job_id)
        assert job is not None
        return str(job.status)


def lease(c: Center) -> tuple[str, int]:
    with c.db.begin() as s:
        row = s.get(SchedulerLeaseRow, "scheduler")
        assert row is not None
        return row.holder, row.token


def footprint(c: Center) -> tuple[int, int, int, int]:
    """Everything a scheduler writes for jobs: events, claims, ledger transactions, settled runs."""
    with c.db.begin() as s:
        return tuple(int(s.scalar(select(func.count()).select_from(t)) or 0)  # type: ignore[return-value]
                     for t in (JobEventRow, DeviceClaimRow, LedgerTxnRow, BillingRunRow))


def test_one_loop_acts_and_the_other_takes_over_after_the_lease_times_out(fresh: Center) -> None:
    """Invariants: of two loops on one database only the lease holder acts (the other makes no
    launcher call and writes nothing); the standby takes over once the leader has not renewed
    for the lease timeout (not before), with a token one higher; the old leader, waking up,
    is refused at its first transaction — it neither reads Ray nor changes anything, steps
    down, and a finished job is settled once, by the new leader."""
    c = fresh
    clock, ray, a, b = pair(c)
    m = c.new_org()
    job1 = submit(c, m.token)
    assert a.cycle().started == [job1]
    assert lease(c) == ("sched-a", 1)
    before = footprint(c)
    rb = b.cycle()
    assert not rb.leader and not rb.started and footprint(c) == before
    assert [x for x in ray.calls if x[0] == "b"] == []
    clock.t += timedelta(seconds=11)
    assert a.cycle().leader  # RUNNING now, lease renewed at this time
    assert status(c, job1) == "RUNNING"
    renewed = clock.t
    clock.t = renewed + timedelta(seconds=TIMEOUT_S - 1)  # a stops renewing (paused)
    assert not b.cycle().leader
    assert [x for x in ray.calls if x[0] == "b"] == []
    clock.t = renewed + timedelta(seconds=TIMEOUT_S + 1)
    rb = b.cycle()
    assert rb.leader and lease(c) == ("sched-b", 2)
    ray.exit(job1)
    # The old leader wakes up mid-way: its sync would end job1, but the fence refuses it.
    calls, before = len(ray.calls), footprint(c)
    with pytest.raises(NotLeader):
        a.reconciler.sync()
    assert status(c, job1) == "RUNNING" and footprint(c) == before
    ra = a.cycle()
    assert not ra.leader and not a.lease.leading and footprint(c) == before
    assert [x for x in ray.calls[calls:] if x[0] == "a" and x[1] != "poll"] == []  # the refused sync polled only
    assert b.cycle().finished == [job1]
    assert status(c, job1) == "SUCCEEDED"
    with c.db.begin() as s:
        runs = s.scalar(select(func.count()).select_from(BillingRunRow).where(BillingRunRow.job_id == job1))
    assert runs == 1
    job2 = submit(c, m.token)
    assert not a.cycle().leader
    assert b.cycle().started == [job2]
    assert ("b", "launch", job2) in ray.calls and ("a", "launch", job2) not in ray.calls


def test_a_leader_paused_mid_cycle_changes_nothing_after_losing_the_lease(fresh: Center) -> None:
    """Invariant: a leader that loaded its snapshot and decided to start a job, then lost the
    lease before applying (paused past the lease timeout while the standby took over), has
    its start refused by the fencing token: the job stays PENDING with no event, claim, hold
    or launch, and the loop steps down; the new leader then starts it once."""
    c = fresh
    m = c.new_org()
    job = submit(c, m.token)
    holder: dict[str, SchedulerLoop] = {}

    def nothing(snapshot: Snapshot, now: float) -> Decisions:
        return Decisions()

    def paused(snapshot: Snapshot, now: float) -> Decisions:
        decisions = decide(snapshot, now)
        assert [d.job_id for d in decisions.starts] == [job]
        clock.t += timedelta(seconds=TIMEOUT_S + 1)  # the pause: the lease expires meanwhile
        assert holder["b"].cycle().leader  # the standby takes over (and, here, starts nothing)
        return decisions

    clock, ray, a, b = pair(c, policy_a=paused, policy_b=nothing)
    holder["b"] = b
    assert a.lease.acquire(clock.t) and a.lease.token is not None  # a leads first
    token_a = a.lease.token
    before = footprint(c)
    report = a.cycle()
    assert not report.leader and report.started == [] and not a.lease.leading
    assert status(c, job) == "PENDING" and footprint(c) == before
    assert not any(x[1] == "launch" for x in ray.calls)
    assert lease(c)[0] == "sched-b" and lease(c)[1] > token_a
    b.policy = decide
    assert b.cycle().started == [job] and status(c, job) in ("STARTING", "RUNNING")
    assert [x for x in ray.calls if x[1] == "launch"] == [("b", "launch", job)]


def test_tokens_grow_at_every_acquisition_and_only_one_of_many_wins(fresh: Center) -> None:
    """Invariants: the compare-and-set gives the lease to exactly one of eight loops racing
    for an expired lease; a fresh lease is refused to others; renewing with an old token
    fails; a released lease is taken at once; every acquisition adds one to the token."""
    c = fresh
    name = f"race-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    leases = [Lease(c.db, f"loop-{i}", TIMEOUT_S, name) for i in range(8)]
    assert leases[0].acquire(now) and leases[0].token == 1
    assert not any(x.acquire(now + timedelta(seconds=TIMEOUT_S - 1)) for x in leases[1:])
    later = now + timedelta(seconds=TIMEOUT_S + 1)
    barrier = threading.Barrier(7)

    def race(x: Lease) -> None:
        barrier.wait()
        x.acquire(later)

    threads = [threading.Thread(target=race, args=(x,)) for x in leases[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [x for x in leases[1:] if x.leading]
    assert len(winners) == 1 and winners[0].token == 2
    assert not leases[0].renew(later) and not leases[0].leading  # its term is over
    w = winners[0]
    w.release()
    assert not w.leading
    assert leases[0].acquire(later) and leases[0].token == 3  # released: taken at once
    assert leases[0].renew(later + timedelta(seconds=5)) and leases[0].token == 3  # renewal keeps the term


class Directory:
    """The runners `SharedRay` has, as Ray's named actors would list them, plus runners
    planted by the test (`extra`) and the `start` requests the loop re-sends."""

    def __init__(self, ray: SharedRay) -> None:
        self.ray = ray
        self.extra: dict[int, set[int]] = {}
        self.resumed: list[int] = []

    def runners(self) -> dict[int, set[int]]:
        live = {j: {0} for j in self.ray.started}
        return live | self.extra

    def resume(self, job_id: int, ranks: set[int]) -> None:
        self.resumed.append(job_id)


def test_a_new_leader_kills_orphans_and_resends_start_to_starting_runners(fresh: Center) -> None:
    """Invariants (crash recovery, with the runner listing scripted): when a loop takes the
    lease it kills the runners of jobs that hold no devices (finished, or unknown to the
    database) and only those, and asks the runners of STARTING jobs to start (their first
    `start` may have died with the old leader); runners of RUNNING jobs are left alone; a
    loop that lost the lease kills nothing."""
    c = fresh
    clock, ray, a, b = pair(c)
    d = Directory(ray)
    b.runners = d
    m = c.new_org()
    done, running = submit(c, m.token), submit(c, m.token)
    assert sorted(a.cycle().started) == [done, running]
    clock.t += timedelta(seconds=1)
    ray.exit(done)
    assert a.cycle().finished == [done]
    starting = submit(c, m.token)
    ray.calls.clear()
    a.launcher.poll = lambda jobs: {j: RunnerState(RunnerPhase.STARTING) if j == starting else ray.state(j)  # type: ignore[method-assign]
                                    for j in jobs}
    assert a.cycle().started == [starting] and status(c, starting) == "STARTING"
    d.extra = {done: {0}, 999_999: {0, 1}}  # a finished job's runner left behind, a never-committed launch
    a.lease.release()  # a stops; b takes over at its next cycle
    report = b.cycle()
    assert report.leader and report.orphans == [done, 999_999]
    assert ("b", "release", done) in ray.calls and ("b", "release", 999_999) in ray.calls
    assert not any(x[1] == "release" and x[2] in (running, starting) for x in ray.calls)
    assert d.resumed == [starting]
    assert status(c, running) == "RUNNING"
    # a stale loop (its lease taken) recovering: refused before it kills anything
    a.runners = d
    a.lease.token = 1
    with pytest.raises(NotLeader):
        recover(a.db, a.launcher, d, resume=True)
    assert not any(x[0] == "a" and x[1] == "release" for x in ray.calls)
