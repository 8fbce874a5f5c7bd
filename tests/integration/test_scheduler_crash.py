"""Fault injection: the real scheduler process (`python -m suanli scheduler`) is SIGKILLed at
random moments (seeded) of its work and restarted, while jobs are submitted through the API
and run on the session's real local Ray cluster (runner actors in a namespace of this test).

Nothing is simulated but the accelerators (the demo cluster, as everywhere in the Ray
suites). Each incarnation is killed a random 0.1–1.5 s after it took the lease (an incarnation
that is not yet leading does nothing worth interrupting; its start-up is ~2 s of Python and
Ray connection), so the kills land anywhere in snapshot, claim, launch, reconcile, settle.
One orphan runner (a job id the database never had, as a launch whose transaction never
committed would leave) is planted before the first start; the first leader must kill it.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from suanli.db.models import BillingRunRow, JobEventRow, JobPlacementRow, JobRow, LedgerTxnRow, NodeRow, SchedulerLeaseRow
from tests.conftest import Center, make_center

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_LOST"}
ACTIVE = {"STARTING", "RUNNING", "CANCELLING", "PREEMPTING"}
KILLS = 20
SEED = 8


class Scheduler:
    """Start, kill and restart `python -m suanli scheduler` against the test's center."""

    def __init__(self, c: Center, ray_address: str, namespace: str, logs: Path) -> None:
        self.env = dict(
            os.environ, PYTHONUNBUFFERED="1", SUANLI_DATA_DIR=str(c.settings.data_dir), SUANLI_DATABASE_URL=c.settings.database_url,
            SUANLI_RAY_ADDRESS=ray_address, SUANLI_RAY_NAMESPACE=namespace, SUANLI_SCHEDULER_INTERVAL_S="0.2",
            SUANLI_SCHEDULER_LEASE_TIMEOUT_S="1", SUANLI_STARTING_TIMEOUT_S="30",
            # No agents run here: the servers registered at the start stay fresh for the test.
            SUANLI_NODE_HEARTBEAT_INTERVAL_S="3600", SUANLI_METER_INTERVAL_S="1", SUANLI_SCHEDULER_METRICS_PORT="0",
        )
        self.db = c.db
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"scheduler-{self.started}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "suanli", "scheduler"], cwd=REPO, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self.proc

    def wait_leading(self, timeout: float = 30) -> None:
        """Until this incarnation holds a fresh lease (holder host:pid)."""
        assert self.proc is not None
        me = f"{socket.gethostname()}:{self.proc.pid}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.db.begin() as s:
                row = s.get(SchedulerLeaseRow, "scheduler")
                if row is not None and row.holder == me and datetime.now(UTC) - row.renewed_at < timedelta(seconds=1):
                    return
            assert self.proc.poll() is None, f"scheduler exited: {self.tail()}"
            time.sleep(0.05)
        raise AssertionError(f"scheduler {me} did not take the lease: {self.tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return (self.logs / f"scheduler-{self.started}.log").read_text(errors="replace")[-3000:]


class Watch:
    """What Ray and the database show, sampled between kills (once per scheduler cycle or so)."""

    def __init__(self, c: Center, namespace: str, address: str) -> None:
        import logging

        import ray

        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        self.ray, self.c, self.namespace = ray, c, namespace
        self.problems: list[str] = []
        self.samples = 0

    def runners(self) -> list[str]:
        return ranks_on_ray(self.namespace)

    def sample(self) -> None:
        self.samples += 1
        names = self.runners()
        twice = [n for n, k in Counter(names).items() if k > 1]
        if twice:
            self.problems.append(f"two live runners for one job rank: {twice}")
        with self.c.db.begin() as s:
            rows = s.execute(select(JobPlacementRow.job_id, NodeRow.name, JobPlacementRow.devices)
                             .join(NodeRow, NodeRow.id == JobPlacementRow.node_id)
                             .join(JobRow, JobRow.id == JobPlacementRow.job_id)
                             .where(JobRow.status.in_(ACTIVE))).all()
        holders: dict[tuple[str, int], set[int]] = defaultdict(set)
        for job_id, node, devices in rows:
            for d in devices:
                holders[(node, d)].add(job_id)
        shared = {k: v for k, v in holders.items() if len(v) > 1}
        if shared:
            self.problems.append(f"devices claimed by two jobs at once: {shared}")

    def pause(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            self.sample()
            time.sleep(min(0.2, max(0.0, end - time.time())))


def submit(c: Center, token: str, marker: Path, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        r = c.client.post("/v1/jobs", headers=c.headers(token), json={
            "name": "crash", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1, "memory_per_node": "256Mi"},
            # Each run writes one line when its process starts: a run started twice would show twice.
            "command": f"echo $SUANLI_JOB_ID:$SUANLI_RESTART_COUNT >> {marker}; sleep 0.5", "time_limit": 120})
        assert r.status_code == 201, r.text
        ids.append(int(r.json()["id"]))
    return ids


def test_scheduler_killed_at_random_points_loses_nothing_and_starts_nothing_twice(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants, after 20 SIGKILLs of the scheduler at random moments (each restarted) while
    jobs come in, and a last incarnation left to settle: every job ended exactly once (one
    event into a final status, and it SUCCEEDED: a crash is never the job's fault); no run of
    a job started its process twice, and its last run exactly once; no job rank ever had two
    runners and no device was held by two jobs (sampled all along); every run that claimed
    devices was settled exactly once (one billing_runs row per run, at most one charge per
    ledger key, no money left held, the org paid exactly the jobs' recorded costs); no runner
    is left in the namespace."""
    c = make_center("", tmp_path, "sqlite")
    namespace = f"crash-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "starts.txt"
    marker.touch()
    sched = Scheduler(c, local_ray.address, namespace, tmp_path)
    watch = Watch(c, namespace, local_ray.address)
    m = c.new_org(prepaid_fen=10_000_000)
    before = c.client.get("/v1/balance", headers=c.headers(m.token)).json()["balance_fen"]
    rng = random.Random(SEED)
    ghost = plant_orphan(namespace)  # a runner whose launch never committed (no such job)
    jobs: list[int] = submit(c, m.token, marker, 6)
    t0 = time.time()
    try:
        for _ in range(KILLS):
            sched.start()
            sched.wait_leading()
            jobs += submit(c, m.token, marker, rng.choice((0, 1, 2)))
            watch.pause(rng.uniform(0.1, 1.5))
            sched.kill()
            watch.sample()
        sched.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            watch.pause(0.5)
            with c.db.begin() as s:
                statuses = dict(s.execute(select(JobRow.id, JobRow.status).where(JobRow.id.in_(jobs))).all())
            if all(st in TERMINAL for st in statuses.values()):
                break
        else:
            raise AssertionError(f"jobs not settled: {statuses}\n{sched.tail()}")
        deadline = time.time() + 15  # killed actors leave the GCS shortly after
        while watch.runners() and time.time() < deadline:
            time.sleep(0.2)
        left = watch.runners()
    finally:
        sched.stop()
        _kill_namespace(namespace)
    elapsed = time.time() - t0
    assert watch.problems == [], watch.problems
    assert watch.samples > 40
    assert left == [], f"runners left in the namespace: {left}"
    assert any(f"job {ghost}: runner ranks [0] exist on Ray" in p.read_text() for p in tmp_path.glob("scheduler-*.log"))
    with c.db.begin() as s:
        rows = {r.id: r for r in s.scalars(select(JobRow).where(JobRow.id.in_(jobs)))}
        events = s.execute(select(JobEventRow.job_id, JobEventRow.to_status).where(JobEventRow.job_id.in_(jobs))).all()
        runs = s.execute(select(BillingRunRow.job_id, BillingRunRow.run, BillingRunRow.cost_fen)
                         .where(BillingRunRow.job_id.in_(jobs))).all()
        keys = list(s.scalars(select(LedgerTxnRow.key).where(LedgerTxnRow.job_id.in_(jobs))))
    ends: Counter[int] = Counter(j for j, to in events if to in TERMINAL)
    starts: Counter[int] = Counter(j for j, to in events if to == "STARTING")
    bad = {j: (r.status, r.reason) for j, r in rows.items() if r.status != "SUCCEEDED"}
    assert bad == {}, bad
    assert all(ends[j] == 1 for j in jobs), {j: ends[j] for j in jobs if ends[j] != 1}
    started = Counter(line.strip() for line in marker.read_text().splitlines() if line.strip())
    assert [k for k, n in started.items() if n > 1] == [], "a run's process started twice"
    assert all(started[f"{j}:{rows[j].restart_count}"] == 1 for j in jobs)  # the run that succeeded, once
    per_run = Counter((j, run) for j, run, _ in runs)
    assert [k for k, n in per_run.items() if n > 1] == [], "a run settled twice"
    assert all(sum(n for (jj, _), n in per_run.items() if jj == j) == starts[j] for j in jobs), (per_run, starts)
    assert len(keys) == len(set(keys))
    balance = c.client.get("/v1/balance", headers=c.headers(m.token)).json()
    assert balance["held_fen"] == 0
    assert before - balance["balance_fen"] == sum(r.cost_fen or 0 for r in rows.values()) == sum(x[2] for x in runs)
    assert sched.started == KILLS + 1 and elapsed < 150, elapsed
    c.client.close()
    c.db.dispose()


def plant_orphan(namespace: str) -> int:
    """A named runner actor for a job id the database never had; returns that id."""
    import ray

    class Ghost:
        def kill_now(self) -> None:
            pass

    job_id = 10**6
    h = ray.remote(Ghost).options(name=f"suanli-job-{job_id}-0", namespace=namespace, lifetime="detached",
                                  num_cpus=0).remote()
    ray.get(h.kill_now.remote(), timeout=60)  # alive and registered before the scheduler looks
    return job_id


def ranks_on_ray(namespace: str) -> list[str]:
    """Every job rank Ray holds in the namespace, one `suanli-job-<id>-<rank>` per holder: the
    per-rank runner actors by name, and each rank a server's supervisor (`suanli-server-*`,
    which itself stays) still holds. A rank held twice shows twice."""
    import ray

    from scheduler.supervisor import SUPERVISOR_PREFIX

    out = []
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a.get("namespace") != namespace:
            continue
        if not a["name"].startswith(SUPERVISOR_PREFIX):
            out.append(a["name"])
            continue
        try:
            held = ray.get(ray.get_actor(a["name"], namespace=namespace).runners.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - a dead or just-killed supervisor holds nothing
            continue
        out += [f"suanli-job-{job}-{rank}" for job, rank in held]
    return out


def _kill_namespace(namespace: str) -> None:
    """Leave the shared Ray cluster clean even when the test failed."""
    import ray

    for a in ray.util.list_named_actors(all_namespaces=True):
        if a.get("namespace") == namespace:
            try:
                ray.kill(ray.get_actor(a["name"], namespace=namespace), no_restart=True)
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass
