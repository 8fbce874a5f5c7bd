"""One transaction per cycle for the loop's starts and for the reconciler's ends, a SAVEPOINT
per job (scheduler/loop.py, scheduler/reconciler.py), on SQLite and on PostgreSQL.

The live loop and real databases; the launcher is scripted (no Ray here: what is checked is
what the database holds around the launch, which does not depend on Ray). The races are
provoked for real between the snapshot and the apply: the policy (the real one, wrapped)
raises the price after deciding, so one org can no longer cover its hold, and claims one
chosen device behind the loop's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import delete, func, select

from quota.ledger import hold_fen
from scheduler.loop import LoopConfig, SchedulerLoop
from scheduler.policy import decide
from scheduler.types import Decisions, LaunchSpec, RunnerPhase, RunnerState, Snapshot
from suanli.db.models import DeviceClaimRow, JobEventRow, JobPlacementRow, JobRow, LedgerTxnRow, NodeRow
from suanli.db.store import tenancy
from tests.conftest import Center
from tests.integration.test_center_fault_billing import Clock

TYPE = "nvidia-a100-80g"


class ScriptedLauncher:
    """Runs every launched job until `exit_now` names it. At each launch it records every
    job's status as another connection sees it (what was committed before the launch)."""

    def __init__(self, c: Center, clock: Clock) -> None:
        self.c, self.clock = c, clock
        self.launched: list[int] = []
        self.seen_at_launch: list[dict[int, str]] = []
        self.exit_now: set[int] = set()
        self.released: list[int] = []
        self.on_poll = lambda: None

    def launch(self, spec: LaunchSpec) -> None:
        with self.c.db.begin() as s:
            self.seen_at_launch.append(dict(s.execute(select(JobRow.id, JobRow.status)).all()))
        self.launched.append(spec.job_id)

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        self.on_poll()
        t = self.clock.now().timestamp()
        return {j: RunnerState(RunnerPhase.EXITED, started_at=t - 60, ended_at=t, exit_code=0) if j in self.exit_now
                else RunnerState(RunnerPhase.RUNNING, started_at=t - 60) for j in jobs}

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        pass

    def release(self, job_id: int, ranks: int) -> None:
        self.released.append(job_id)


def _submit(c: Center, token: str, name: str) -> int:
    r = c.client.post("/v1/jobs", headers=c.headers(token), json={
        "name": name, "resources": {"accelerator": TYPE, "cpus_per_node": 1, "memory_per_node": 256},
        "command": "true", "time_limit": "1h"})
    assert r.status_code in (200, 201), r.text
    return int(r.json()["id"])


def _job(c: Center, token: str, job_id: int) -> dict:  # type: ignore[type-arg]
    return c.client.get(f"/v1/jobs/{job_id}", headers=c.headers(token)).json()


def test_a_failed_start_rolls_back_only_its_own_savepoint(fresh: Center) -> None:
    """Invariants: one cycle starts several jobs in one transaction; a job whose org can no
    longer cover its hold waits with `insufficient_funds`, and a job whose device was claimed
    meanwhile waits too — for both nothing is half-written (no STARTING transition or event,
    no placement, no claim, no hold, version unchanged) — while the others start. Every
    launch comes after the one commit (the first launch already sees all of the cycle's
    starts committed), in the policy's order; the job refused for its device starts next cycle."""
    c = fresh
    clock = Clock()
    with c.db.begin() as s:
        price0 = tenancy.current_price(s, TYPE, clock.now())
    assert price0 is not None and price0.fen_per_device_hour > 0
    rich = c.new_org()
    poor = c.new_org(prepaid_fen=hold_fen(1000, 3600, price0.fen_per_device_hour))  # exactly one hold at today's price
    ids = {n: _submit(c, (poor if n == "broke" else rich).token, n) for n in ("a", "broke", "taken", "b")}
    order: list[int] = []
    planted: list[tuple[int, int]] = []

    def racing_policy(snap: Snapshot, now: float) -> Decisions:
        d = decide(snap, now)
        if not order:  # first cycle only: the world changes between the decision and its apply
            order.extend(st.job_id for st in d.starts)
            taken = next(st for st in d.starts if st.job_id == ids["taken"])
            with c.db.begin() as s:
                tenancy.set_price(s, TYPE, 2 * price0.fen_per_device_hour, clock.now() - timedelta(seconds=1))
                node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == taken.placements[0].node))
                assert node_id is not None
                s.add(DeviceClaimRow(node_id=node_id, device_index=taken.placements[0].devices[0], job_id=None))
                planted.append((node_id, taken.placements[0].devices[0]))
        return d

    launcher = ScriptedLauncher(c, clock)
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, meter_interval_s=0), clock=clock,
                         policy=racing_policy, holder="batch-test")
    with c.db.begin() as s:
        versions = dict(s.execute(select(JobRow.id, JobRow.version)).all())
    loop.cycle()
    assert set(order) == set(ids.values()), "the policy was to start all four"
    ok = [ids["a"], ids["b"]]
    assert launcher.launched == [j for j in order if j in ok]
    assert all(launcher.seen_at_launch[0][j] == "STARTING" for j in ok), launcher.seen_at_launch[0]
    broke = _job(c, poor.token, ids["broke"])
    assert broke["status"] == "PENDING" and broke["reason_code"] == "insufficient_funds", broke
    assert _job(c, rich.token, ids["taken"])["status"] == "PENDING"
    with c.db.begin() as s:
        for name in ("broke", "taken"):
            j = ids[name]
            assert s.scalar(select(JobRow.version).where(JobRow.id == j)) == versions[j], name
            assert not s.scalar(select(func.count()).select_from(JobEventRow).where(
                JobEventRow.job_id == j, JobEventRow.to_status == "STARTING")), name
            assert not s.scalar(select(func.count()).select_from(JobPlacementRow).where(JobPlacementRow.job_id == j)), name
            assert not s.scalar(select(func.count()).select_from(DeviceClaimRow).where(DeviceClaimRow.job_id == j)), name
            assert s.scalar(select(JobRow.hold).where(JobRow.id == j)) is None, name
            assert not s.scalar(select(func.count()).select_from(LedgerTxnRow).where(
                LedgerTxnRow.key.like(f"hold:job:{j}:%"))), name
        for j in ok:  # the others: claim, placement, hold, all committed
            assert s.scalar(select(func.count()).select_from(DeviceClaimRow).where(DeviceClaimRow.job_id == j)) == 1
            assert s.scalar(select(func.count()).select_from(LedgerTxnRow).where(LedgerTxnRow.key == f"hold:job:{j}:run:0")) == 1
        node_id, device = planted[0]
        s.execute(delete(DeviceClaimRow).where(DeviceClaimRow.node_id == node_id, DeviceClaimRow.device_index == device))
    clock.t += timedelta(seconds=1)
    loop.cycle()  # the device is free again: the refused job starts now; the broke org still cannot pay
    assert ids["taken"] in launcher.launched and ids["broke"] not in launcher.launched
    assert _job(c, rich.token, ids["taken"])["status"] in ("STARTING", "RUNNING")


def test_runs_ending_in_one_cycle_commit_together_and_a_stale_one_waits(fresh: Center) -> None:
    """Invariants: runs that exited in one cycle end in one transaction, a savepoint each;
    a job that changed since it was read (cancelled during the poll) rolls back only its own
    end — its claim and hold stay, it is not charged and its runner is not released — while
    the others end, are charged and released after the commit; the next cycle ends it."""
    c = fresh
    clock = Clock()
    m = c.new_org()
    jobs = [_submit(c, m.token, f"e{i}") for i in range(3)]
    launcher = ScriptedLauncher(c, clock)
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, meter_interval_s=0), clock=clock,
                         holder="batch-test")
    loop.cycle()
    clock.t += timedelta(seconds=1)
    loop.cycle()
    assert [_job(c, m.token, j)["status"] for j in jobs] == ["RUNNING"] * 3
    stale = jobs[1]
    launcher.exit_now = set(jobs)

    def cancel_once() -> None:
        launcher.on_poll = lambda: None
        r = c.client.post(f"/v1/jobs/{stale}/cancel", headers=c.headers(m.token))
        assert r.status_code in (200, 202), r.text

    launcher.on_poll = cancel_once
    clock.t += timedelta(seconds=60)
    report = loop.cycle()
    assert sorted(report.finished) == sorted([jobs[0], jobs[2]])
    assert sorted(launcher.released) == sorted([jobs[0], jobs[2]])
    for j in (jobs[0], jobs[2]):
        got = _job(c, m.token, j)
        assert got["status"] == "SUCCEEDED" and got["cost_fen"] > 0, got
    with c.db.begin() as s:
        assert s.scalar(select(func.count()).select_from(DeviceClaimRow).where(DeviceClaimRow.job_id == stale)) == 1
        assert s.scalar(select(JobRow.hold).where(JobRow.id == stale)) is not None
        assert not s.scalar(select(func.count()).select_from(LedgerTxnRow).where(LedgerTxnRow.key.in_(
            [f"settle:job:{stale}:run:0", f"release:job:{stale}:run:0", f"refund:job:{stale}:run:0"])))
        for j in (jobs[0], jobs[2]):
            assert not s.scalar(select(func.count()).select_from(DeviceClaimRow).where(DeviceClaimRow.job_id == j))
    assert _job(c, m.token, stale)["status"] == "CANCELLING"
    clock.t += timedelta(seconds=1)
    loop.cycle()
    assert _job(c, m.token, stale)["status"] not in ("CANCELLING", "RUNNING")
    assert launcher.released.count(stale) == 1
