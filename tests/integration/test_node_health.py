"""Servers that stop beating, devices that turn unhealthy, allocations that sit idle — through
the real scheduler loop, the real API and a real SQLite database.

The launcher is the scripted one of `test_center_fault_billing` (it stands for Ray: the Ray
suite, `test_e2e_node_loss.py`, does the same with real runners); time is a settable clock
so NOT_READY, LOST and idle windows are crossed exactly. Heartbeats go through
`PUT /v1/nodes/{name}/heartbeat` with the agent token, as a real agent sends them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from typer.testing import CliRunner

from scheduler.loop import LoopConfig, SchedulerLoop
from suanli.cli import app as cli_app
from suanli.db.models import BillingRunRow, JobEventRow, NodeRow
from suanli.node_health import IdleRule, track_idle
from tests.conftest import make_center, serve
from tests.integration.test_center_fault_billing import Clock, ScriptedLauncher


class Launcher(ScriptedLauncher):
    """Also records which jobs' runners were torn down or asked to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[int] = []
        self.stops: list[int] = []

    def release(self, job_id: int, ranks: int) -> None:
        self.released.append(job_id)
        self.started.pop(job_id, None)

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        self.stops.append(job_id)


def _setup(tmp_path: Path, lost_after_s: float = 600.0) -> tuple[Any, Clock, Launcher, SchedulerLoop]:
    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), Launcher()
    launcher.clock = clock
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, node_timeout_s=60, node_lost_after_s=lost_after_s),
                         clock=clock)
    _age_all(c, clock, 0)
    return c, clock, launcher, loop


def _age_all(c: Any, clock: Clock, seconds: float, name: str | None = None) -> None:
    """Set the last heartbeat of one server (or all) `seconds` before the clock's now."""
    with c.db.begin() as s:
        stmt = update(NodeRow).values(last_heartbeat_at=clock.t - timedelta(seconds=seconds))
        s.execute(stmt.where(NodeRow.name == name) if name else stmt)


def _beat(c: Any, name: str, health: dict[int, str] | None = None, util: dict[int, float] | None = None,
          devices: int = 8) -> dict[str, Any]:
    body = {"accelerator_type": "nvidia-a100-80g", "cpus": 64, "memory_mb": 1024 * 1024, "labels": {"rack": "r1"},
            "devices": [{"index": i, "uuid": f"{name}-{i}", "model": "NVIDIA A100-SXM4-80GB", "memory_mb": 81920,
                         "health": (health or {}).get(i, "OK"),
                         "health_reason": "Xid 79" if (health or {}).get(i, "OK") != "OK" else "",
                         "utilization_pct": (util or {}).get(i)} for i in range(devices)]}
    r = c.client.put(f"/v1/nodes/{name}/heartbeat", json=body, headers=c.headers(c.tokens.agent))
    assert r.status_code == 200, r.text
    return r.json()


def _submit(c: Any, token: str, devices: int = 1, requeue: bool = True) -> int:
    r = c.client.post("/v1/jobs", headers=c.headers(token), json={
        "name": "n", "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": devices, "cpus_per_node": 1,
                                   "memory_per_node": 256}, "command": "true", "requeue": requeue})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _job(c: Any, token: str, job_id: int) -> dict[str, Any]:
    return c.client.get(f"/v1/jobs/{job_id}", headers=c.headers(token)).json()


def _events(c: Any, node: str) -> list[tuple[str, int | None]]:
    r = c.client.get(f"/v1/nodes/{node}/events", headers=c.headers())
    assert r.status_code == 200, r.text
    return [(e["kind"], e["device"]) for e in r.json()]


def test_silent_server_goes_not_ready_then_lost_and_its_job_is_requeued_uncharged(tmp_path: Path) -> None:
    """Invariants: a server silent past the heartbeat timeout is NOT_READY (an event; its
    running job is left alone; nothing new lands on it); silent past `node_lost_after_s` it is
    LOST: its job goes back to PENDING with its submit time, restart count + 1, the runner torn
    down, the run not charged; the job then starts on a live server, never the lost one; a
    heartbeat brings the server back READY with an event."""
    c, clock, launcher, loop = _setup(tmp_path)
    m = c.new_org()
    job_id = _submit(c, m.token)
    loop.cycle()
    loop.cycle()
    first = _job(c, m.token, job_id)
    assert first["status"] == "RUNNING", first
    node = first["nodes"][0]
    other = "a100-1" if node == "a100-0" else "a100-0"

    clock.t = datetime.now(UTC)  # the API judges heartbeats on the real clock: age the silent server instead
    _age_all(c, clock, 120, node)
    loop.cycle()
    assert _job(c, m.token, job_id)["status"] == "RUNNING"
    got = c.client.get(f"/v1/nodes/{node}", headers=c.headers()).json()
    assert got["status"] == "NOT_READY" and ("not_ready", None) in _events(c, node)
    second = _submit(c, m.token)
    loop.cycle()
    loop.cycle()
    assert _job(c, m.token, second)["nodes"] == [other]

    clock.t = datetime.now(UTC)
    _age_all(c, clock, 720, node)
    loop.cycle()
    done = _job(c, m.token, job_id)
    assert done["status"] in ("PENDING", "STARTING", "RUNNING") and done["restart_count"] == 1, done
    assert job_id in launcher.released
    assert c.client.get(f"/v1/nodes/{node}", headers=c.headers()).json()["status"] == "LOST"
    assert ("lost", None) in _events(c, node)
    reasons = [e["reason"] for e in c.client.get(f"/v1/jobs/{job_id}/events", headers=c.headers(m.token)).json()]
    assert any(f"requeued: server {node} lost" in r and "not charged" in r for r in reasons), reasons
    loop.cycle()
    loop.cycle()
    again = _job(c, m.token, job_id)
    assert again["status"] == "RUNNING" and again["nodes"] == [other], again
    with c.db.begin() as s:
        runs = s.execute(select(BillingRunRow.cost_fen, BillingRunRow.center_fault).where(BillingRunRow.job_id == job_id)
                         .order_by(BillingRunRow.run)).all()
    assert runs[0] == (0, True), runs

    _beat(c, node)
    assert c.client.get(f"/v1/nodes/{node}", headers=c.headers()).json()["status"] == "READY"
    assert _events(c, node)[0] == ("ready", None)
    c.db.dispose()


def test_job_that_asked_not_to_be_requeued_ends_node_lost(tmp_path: Path) -> None:
    """Invariant: with `requeue: false`, a job on a lost server ends NODE_LOST (terminal,
    ended_at set, devices free), not charged."""
    c, clock, launcher, loop = _setup(tmp_path, lost_after_s=300)
    m = c.new_org()
    job_id = _submit(c, m.token, devices=8, requeue=False)
    loop.cycle()
    loop.cycle()
    node = _job(c, m.token, job_id)["nodes"][0]
    clock.t = datetime.now(UTC)
    _age_all(c, clock, 301, node)
    loop.cycle()
    done = _job(c, m.token, job_id)
    assert done["status"] == "NODE_LOST" and done["ended_at"] and done["cost_fen"] in (None, 0), done
    got = c.client.get(f"/v1/nodes/{node}", headers=c.headers()).json()
    assert got["devices_busy"] == 0
    c.db.dispose()


def test_unhealthy_device_is_left_out_of_placement_until_healthy(tmp_path: Path) -> None:
    """Invariants: a device reported Critical is not placed on (a job asking for all 8
    devices of a server waits while the other server is silent), the node lists it as
    unhealthy with a device_unhealthy event; Warning still takes jobs; once reported OK the
    job starts there, with a device_healthy event."""
    c, clock, launcher, loop = _setup(tmp_path)
    _age_all(c, clock, 3600, "a100-1")
    got = _beat(c, "a100-0", health={3: "Critical"})
    assert got["unhealthy_devices"] == [3] and got["health"] == "degraded"
    assert ("device_unhealthy", 3) in _events(c, "a100-0")
    m = c.new_org()
    job_id = _submit(c, m.token, devices=8)
    loop.cycle()
    assert _job(c, m.token, job_id)["status"] == "PENDING"
    _beat(c, "a100-0", health={3: "Warning"})
    assert ("device_healthy", 3) in _events(c, "a100-0")
    loop.cycle()
    assert _job(c, m.token, job_id)["status"] in ("STARTING", "RUNNING")
    c.db.dispose()


def test_idle_allocation_is_flagged_once_shown_and_cleared(tmp_path: Path) -> None:
    """Invariants: a job whose device stays below the idle threshold for the window gets one
    job event and an `idle_since` notice (the heartbeat answer marks the device idle with
    job, org and project); busy again → the notice is cleared with an event; never flagged
    before the window has passed."""
    c, clock, launcher, loop = _setup(tmp_path)
    _age_all(c, clock, 3600, "a100-1")
    m = c.new_org()
    job_id = _submit(c, m.token, devices=2)
    loop.cycle()
    loop.cycle()
    assert _job(c, m.token, job_id)["nodes"] == ["a100-0"]
    devs = _job(c, m.token, job_id)["placements"][0]["devices"]
    _beat(c, "a100-0", util={d: 1.0 for d in devs})
    with c.db.begin() as s:  # the window passes: the first idle beat was 31 minutes ago
        row = s.scalar(select(NodeRow).where(NodeRow.name == "a100-0"))
        earlier = (clock.t - timedelta(minutes=31)).isoformat()
        row.devices = [dict(d, idle_since=earlier) if d.get("idle_since") else d for d in row.devices]
    answer = _beat(c, "a100-0", util={d: 2.0 for d in devs})
    idle = [d for d in answer["devices"] if d["idle"]]
    assert [d["index"] for d in idle] == devs and idle[0]["job_id"] == job_id and idle[0]["org"] == m.org
    got = _job(c, m.token, job_id)
    assert got["idle_since"] and any("idle allocation" in n for n in got["notices"]), got
    with serve(c) as url:  # `suanli describe` shows the notice
        env = {"SUANLI_SERVER": url, "SUANLI_TOKEN": m.token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "250"}
        shown = CliRunner().invoke(cli_app, ["describe", str(job_id)], env=env)
    assert shown.exit_code == 0 and "Notice:" in shown.stdout and "idle allocation" in shown.stdout, shown.output
    _beat(c, "a100-0", util={d: 3.0 for d in devs})
    with c.db.begin() as s:
        flagged = s.scalar(select(func.count()).select_from(JobEventRow)
                           .where(JobEventRow.job_id == job_id, JobEventRow.reason.like("idle allocation%")))
    assert flagged == 1
    _beat(c, "a100-0", util={d: 90.0 for d in devs})
    got = _job(c, m.token, job_id)
    assert got["idle_since"] is None and got["notices"] == []
    c.db.dispose()


def test_stop_idle_jobs_cancels_an_idle_running_job(tmp_path: Path) -> None:
    """Invariant: with `stop_idle_jobs`, flagging a RUNNING job also cancels it (RUNNING →
    CANCELLING through the transition table, reason naming the idle devices); the loop then
    stops it like any cancel."""
    c, clock, launcher, loop = _setup(tmp_path)
    c.settings.stop_idle_jobs = True
    _age_all(c, clock, 3600, "a100-1")
    m = c.new_org()
    job_id = _submit(c, m.token, devices=1)
    loop.cycle()
    loop.cycle()
    dev = _job(c, m.token, job_id)["placements"][0]["devices"][0]
    _beat(c, "a100-0", util={dev: 0.0})
    with c.db.begin() as s:
        row = s.scalar(select(NodeRow).where(NodeRow.name == "a100-0"))
        row.devices = [dict(d, idle_since=(clock.t - timedelta(hours=1)).isoformat()) if d.get("idle_since") else d
                       for d in row.devices]
    _beat(c, "a100-0", util={dev: 0.0})
    got = _job(c, m.token, job_id)
    assert got["status"] == "CANCELLING" and got["reason"].startswith("stopped by the center: idle allocation"), got
    loop.cycle()
    assert _job(c, m.token, job_id)["status"] == "CANCELLING" and job_id in launcher.stops
    c.db.dispose()


def test_track_idle_restarts_when_the_device_changes_hands() -> None:
    """Invariants (pure): idle since the first low beat; kept while the same jobs hold it;
    restarted for a new holder; cleared when busy, free or not reported."""
    t0 = datetime(2026, 11, 29, tzinfo=UTC)
    dev = {"index": 0, "utilization_pct": 1.0}
    a = track_idle(None, dev, (7,), t0, 5.0)
    assert a["idle_since"] == t0.isoformat() and a["idle_jobs"] == [7]
    b = track_idle(a, dev, (7,), t0 + timedelta(minutes=5), 5.0)
    assert b["idle_since"] == t0.isoformat()
    c = track_idle(b, dev, (8,), t0 + timedelta(minutes=6), 5.0)
    assert c["idle_since"] == (t0 + timedelta(minutes=6)).isoformat()
    assert track_idle(c, dict(dev, utilization_pct=50.0), (8,), t0, 5.0)["idle_since"] is None
    assert track_idle(c, dev, (), t0, 5.0)["idle_since"] is None
    assert track_idle(c, dict(dev, utilization_pct=None), (8,), t0, 5.0)["idle_since"] is None
    assert IdleRule().threshold_pct == 5.0 and IdleRule().window_s == 1800.0


class WatchingLauncher(Launcher):
    """Also a NodeWatch (as RayLauncher is): `dead` servers are reported down; counts asks."""

    def __init__(self) -> None:
        super().__init__()
        self.dead: set[str] = set()
        self.asked = 0

    def servers_down(self, servers: Any) -> set[str]:
        self.asked += 1
        return self.dead & set(servers)


def test_engine_node_table_is_read_at_most_every_engine_check_s(tmp_path: Path) -> None:
    """Invariants: while every server is up the loop asks the engine (Ray's node table) at
    most once per `engine_check_s` however many cycles run; a node that dies is found at the
    next check (an engine_lost event on it); while one is down every cycle asks,
    so the server is placed on again in the cycle after its node comes back."""
    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), WatchingLauncher()
    launcher.clock = clock
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, engine_check_s=2.0), clock=clock)
    for _ in range(5):
        loop.cycle()
    assert launcher.asked == 1
    clock.t += timedelta(seconds=1.9)
    loop.cycle()
    assert launcher.asked == 1
    launcher.dead = {"a100-0"}
    clock.t += timedelta(seconds=0.2)  # 2.1 s after the first check
    loop.cycle()
    assert launcher.asked == 2 and loop.reconciler.down == {"a100-0"}
    events = c.client.get("/v1/nodes/a100-0/events", headers=c.headers(c.tokens.admin)).json()
    assert any(e["kind"] == "engine_lost" for e in events), events
    loop.cycle()
    loop.cycle()
    assert launcher.asked == 4  # down: every cycle
    launcher.dead = set()
    loop.cycle()
    assert launcher.asked == 5 and loop.reconciler.down == set()
    loop.cycle()
    assert launcher.asked == 5  # all up again: back to every 2 s
    c.db.dispose()
