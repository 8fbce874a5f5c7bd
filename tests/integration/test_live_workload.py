"""The live loop's target workload (issue 4's placement, live): the shapes of recently
submitted jobs reach `decide` so one-server jobs are placed by FGD less the scarcity penalty,
as in the simulator; on SQLite and PostgreSQL, through the real API and loop.

The launcher is the scripted one of `test_batched_starts` (no Ray here: what is checked is
what the policy is given and what it says it did)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from scheduler.loop import LoopConfig, SchedulerLoop
from scheduler.policy import decide
from scheduler.types import Decisions, Snapshot
from suanli.db.models import JobRow
from suanli.db.store.snapshot import recent_workload
from tests.conftest import Center
from tests.integration.test_batched_starts import ScriptedLauncher
from tests.integration.test_center_fault_billing import Clock

TYPE = "nvidia-a100-80g"


def submit(c: Center, token: str, devices: int = 1, cpus: int = 1, fraction: float = 1.0) -> int:
    r = c.client.post("/v1/jobs", headers=c.headers(token), json={
        "name": "w", "resources": {"accelerator": TYPE, "devices_per_node": devices, "cpus_per_node": cpus,
                                   "memory_per_node": 256, "device_fraction": fraction},
        "command": "true", "time_limit": "1h"})
    assert r.status_code in (200, 201), r.text
    return int(r.json()["id"])


def shapes(w) -> dict[tuple[int, int, int, tuple[str, ...]], float]:  # type: ignore[no-untyped-def]
    return {(s.cpu_milli, s.gpu_milli, s.num_gpu, s.types): round(s.weight, 6) for s in w.shapes}


def test_recent_workload_counts_the_window_only(fresh: Center) -> None:
    """Invariants: the workload is the popularity of the per-server shapes (CPUs, share,
    devices, accepted types) of jobs submitted within the window — an older job does not
    count — with every shape kept (the rarest two here are below the FGD paper's 95 % cut);
    there is none when nothing was submitted in the window."""
    c = fresh
    m = c.new_org(prepaid_fen=10_000_000)
    now = Clock().now()
    with c.db.begin() as s:
        assert recent_workload(s, now, 3600) is None
    for _ in range(19):
        submit(c, m.token)
    submit(c, m.token, devices=2, cpus=4)
    submit(c, m.token, fraction=0.5)
    old = submit(c, m.token, devices=8, cpus=32)
    with c.db.begin() as s:
        s.execute(update(JobRow).where(JobRow.id == old).values(submitted_at=now - timedelta(days=8)))
    with c.db.begin() as s:
        w = recent_workload(s, Clock().now(), 7 * 24 * 3600)
    assert w is not None and shapes(w) == {(1, 1000, 1, (TYPE,)): round(19 / 21, 6), (4, 1000, 2, (TYPE,)): round(1 / 21, 6),
                                           (1, 500, 1, (TYPE,)): round(1 / 21, 6)}


def test_loop_gives_the_policy_the_workload_and_the_start_says_how_it_was_placed(fresh: Center) -> None:
    """Invariants: the loop hands `decide` the recent workload (re-read only every
    `workload_refresh_s`), its one-server starts say they were placed by FGD less the
    scarcity penalty; with `workload_window_s` 0 there is no workload and starts say best fit."""
    c = fresh
    m = c.new_org(prepaid_fen=10_000_000)
    seen: list[Snapshot] = []

    def policy(snap: Snapshot, now: float) -> Decisions:
        seen.append(snap)
        return decide(snap, now)

    clock = Clock()
    launcher = ScriptedLauncher(c, clock)
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, workload_refresh_s=600), clock=clock, policy=policy)
    first = submit(c, m.token, devices=2, cpus=2)
    loop.cycle()
    assert seen[-1].workload is not None and shapes(seen[-1].workload) == {(2, 1000, 2, (TYPE,)): 1.0}
    started = c.client.get(f"/v1/jobs/{first}/events", headers=c.headers(m.token)).json()
    assert any("placed by least fragmentation growth (FGD) less scarcity" in (e.get("reason") or "") for e in started), started

    submit(c, m.token, fraction=0.25)
    clock.t += timedelta(seconds=60)
    loop.cycle()
    assert shapes(seen[-1].workload) == {(2, 1000, 2, (TYPE,)): 1.0}  # not re-read within 600 s
    clock.t += timedelta(seconds=600)
    loop.cycle()
    assert shapes(seen[-1].workload) == {(2, 1000, 2, (TYPE,)): 0.5, (1, 250, 1, (TYPE,)): 0.5}

    plain = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, workload_window_s=0, lease_name="plain"), clock=clock,
                          policy=policy)
    late = submit(c, m.token)
    plain.cycle()
    assert seen[-1].workload is None
    events = c.client.get(f"/v1/jobs/{late}/events", headers=c.headers(m.token)).json()
    assert any("placed by best fit" in (e.get("reason") or "") for e in events), events
