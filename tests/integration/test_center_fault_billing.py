"""The live loop and the money: runs lost through the center's fault, with the
`refund_center_faults` setting on and off, and suspended orgs, through the real scheduler
loop and a real SQLite database.

The launcher here is scripted: it stands for Ray reporting a runner as gone (a lost node),
which the Ray suite provokes for real (`test_e2e_ray.py::test_lost_runner_…`, setting on);
what is checked here is the money, which does not depend on how the runner was lost.
Time is a settable clock so the run's length, and so its cost, is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.loop import LoopConfig, SchedulerLoop
from scheduler.types import LaunchSpec, RunnerPhase, RunnerState


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def now(self) -> datetime:
        return self.t


class ScriptedLauncher:
    """Every launched job runs from `started` until `lost` is set, then its runner is gone."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.lost = False
        self.clock: Clock | None = None

    def launch(self, spec: LaunchSpec) -> None:
        assert self.clock is not None
        self.started[spec.job_id] = self.clock.now().timestamp()

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        return {j: (RunnerState(RunnerPhase.LOST, error="node lost") if self.lost or j not in self.started
                    else RunnerState(RunnerPhase.RUNNING, started_at=self.started[j])) for j in jobs}

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        pass

    def release(self, job_id: int, ranks: int) -> None:
        pass


@pytest.mark.parametrize("refund", [True, False])
def test_center_fault_runs_are_refunded_or_charged_by_setting(tmp_path: Path, refund: bool) -> None:
    """Invariants: a running job whose runner is lost ends FAILED; with the setting on
    (default) the org pays nothing for that run and what metering took comes back; with it
    off the run is charged exactly devices × hours × price for the time it ran. Either way
    no money stays held and the settled run is recorded once, marked as a center fault only
    when refunded."""
    from sqlalchemy import select
    from tests.conftest import make_center

    from suanli.db.models import BillingRunRow

    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), ScriptedLauncher()
    launcher.clock = clock
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, meter_interval_s=60, refund_center_faults=refund),
                         clock=clock)
    m = c.new_org(prepaid_fen=1_000_000)
    before = c.client.get("/v1/balance", headers=c.headers(m.token)).json()["balance_fen"]
    job = c.client.post("/v1/jobs", headers=c.headers(m.token), json={
        "name": "lost", "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 2, "cpus_per_node": 1,
                                      "memory_per_node": 256},
        "command": "true", "time_limit": "2h"}).json()
    loop.cycle()
    got = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert got["status"] in ("STARTING", "RUNNING"), got
    price = got["price_fen_per_device_hour"]
    clock.t += timedelta(seconds=1)
    loop.cycle()  # RUNNING
    clock.t += timedelta(minutes=30)
    loop.cycle()  # metered
    mid = c.client.get("/v1/balance", headers=c.headers(m.token)).json()
    assert mid["held_fen"] > 0 and mid["balance_fen"] < before
    launcher.lost = True
    clock.t += timedelta(minutes=15)
    loop.cycle()
    done = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert done["status"] == "FAILED" and "runner lost" in done["reason"]
    after = c.client.get("/v1/balance", headers=c.headers(m.token)).json()
    assert after["held_fen"] == 0
    ran_ms = (45 * 60 + 1) * 1000  # from the launch (the process start here) to the loss being seen
    # 2 devices × ran_ms × price / 3,600,000, rounded half-up to whole fen
    expected = 0 if refund else (2 * 2 * ran_ms * price + 3_600_000) // (2 * 3_600_000)
    assert before - after["balance_fen"] == expected
    assert (done["cost_fen"] or 0) == expected
    with c.db.begin() as s:
        runs = list(s.scalars(select(BillingRunRow).where(BillingRunRow.job_id == job["id"])))
    assert len(runs) == 1 and runs[0].cost_fen == expected and runs[0].center_fault is refund
    c.db.dispose()


def test_pending_jobs_of_a_suspended_org_wait_until_it_is_reinstated(tmp_path: Path) -> None:
    """Invariants (live loop, real database): a job already pending when its org is
    suspended does not start, and says so with `org_not_active`; once the org is verified
    again it starts on the next cycle."""
    from tests.conftest import make_center

    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), ScriptedLauncher()
    launcher.clock = clock
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir), clock=clock)
    m, admin = c.new_org(), c.headers(c.tokens.admin)
    job = c.client.post("/v1/jobs", headers=c.headers(m.token), json={
        "name": "w", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1, "memory_per_node": 256},
        "command": "true"}).json()
    r = c.client.post(f"/v1/admin/orgs/{m.org}/status", headers=admin, json={"status": "suspended", "reason": "unpaid"})
    assert r.status_code == 200, r.text
    loop.cycle()
    got = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert got["status"] == "PENDING" and got["reason_code"] == "org_not_active", got
    assert not launcher.started
    r = c.client.post(f"/v1/admin/orgs/{m.org}/status", headers=admin, json={"status": "verified", "reason": "paid"})
    assert r.status_code == 200, r.text
    loop.cycle()
    got = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert got["status"] in ("STARTING", "RUNNING") and job["id"] in launcher.started
    c.db.dispose()


def test_servers_without_a_recent_heartbeat_are_not_placed_on(tmp_path: Path) -> None:
    """Invariants (live loop with `node_timeout_s`): while every server of the type has been
    silent for longer than the timeout (DOWN), a job waits and nothing is launched; once a
    heartbeat is fresh again, it starts on the next cycle."""
    from sqlalchemy import update
    from tests.conftest import make_center

    from suanli.db.models import NodeRow

    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), ScriptedLauncher()
    launcher.clock = clock
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, node_timeout_s=60), clock=clock)
    with c.db.begin() as s:
        s.execute(update(NodeRow).values(last_heartbeat_at=clock.t - timedelta(minutes=5)))
    m = c.new_org()
    job = c.client.post("/v1/jobs", headers=c.headers(m.token), json={
        "name": "d", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1, "memory_per_node": 256},
        "command": "true"}).json()
    loop.cycle()
    got = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert got["status"] == "PENDING" and not launcher.started, got
    with c.db.begin() as s:
        s.execute(update(NodeRow).values(last_heartbeat_at=clock.t))
    loop.cycle()
    got = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
    assert got["status"] in ("STARTING", "RUNNING") and job["id"] in launcher.started
    c.db.dispose()
