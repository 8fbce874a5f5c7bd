"""The center's metrics on the API's /metrics, read from a real SQLite database: queue,
allocation, capacity, node status and health, idle allocations, fair share, money.

The scheduler loop runs with the scripted launcher of `test_center_fault_billing` (Ray is
exercised by the Ray suites; here only what the database says matters)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from scheduler.loop import LoopConfig, SchedulerLoop
from suanli.db.models import JobRow, NodeRow
from suanli.metrics import CenterCollector
from tests.conftest import make_center
from tests.integration.test_center_fault_billing import Clock, ScriptedLauncher


def scrape(c: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = c.client.get("/metrics")
    assert r.status_code == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(m: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    """The value of the series of `name` whose labels include `labels` (exactly one)."""
    hits = [v for k, v in m.get(name, {}).items() if set(labels.items()) <= set(k)]
    assert len(hits) == 1, (name, labels, m.get(name))
    return hits[0]


def test_center_metrics_follow_the_database(tmp_path: Path) -> None:
    """Invariants: pending jobs are counted by org/type/reason; a started job shows as running
    with its devices allocated and free capacity reduced by them; a silent server is
    NOT_READY and an unhealthy device is counted on its node and leaves the free count;
    a settled run's cost appears as a counter; balances, voucher and program budgets are
    the ledger's; no series carries a job or user label; the cache (10 s) serves repeated
    scrapes without re-reading."""
    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), ScriptedLauncher()
    launcher.clock = clock
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, node_timeout_s=60), clock=clock)
    with c.db.begin() as s:
        s.execute(update(NodeRow).values(last_heartbeat_at=datetime.now(UTC)))
    m = c.new_org()
    r = c.client.post("/v1/jobs", headers=c.headers(m.token), json={
        "name": "x", "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 2, "cpus_per_node": 1,
                                   "memory_per_node": 256}, "command": "true"})
    job_id = r.json()["id"]
    collector = _center(c)
    collector._at = None  # noqa: SLF001 - force a fresh read for this test's steps
    first = scrape(c)
    assert one(first, "suanli_pending_jobs", org=m.org, accelerator_type="nvidia-a100-80g") == 1
    assert one(first, "suanli_capacity_devices", accelerator_type="nvidia-a100-80g") == 16
    assert one(first, "suanli_free_devices", accelerator_type="nvidia-a100-80g") == 16
    assert one(first, "suanli_center_metrics_up") == 1
    assert 0 <= one(first, "suanli_pending_oldest_age_seconds", accelerator_type="nvidia-a100-80g") < 60
    labels = {k for series in first.values() for key in series for k, _ in key}
    assert not labels & {"job", "job_id", "user", "token"}

    loop.cycle()
    loop.cycle()
    cached = scrape(c)  # within the TTL the cached read is served: still pending, though it started
    assert one(cached, "suanli_pending_jobs", org=m.org, accelerator_type="nvidia-a100-80g") == 1, "cache was not used"
    collector._at = None  # noqa: SLF001
    body = {"accelerator_type": "nvidia-a100-80g", "cpus": 64, "memory_mb": 1024 * 1024, "labels": {"rack": "r1"},
            "devices": [{"index": i, "uuid": f"a100-1-{i}", "model": "A100", "memory_mb": 81920,
                         "health": "Critical" if i == 7 else "OK"} for i in range(8)]}
    node = c.client.get(f"/v1/jobs/{job_id}", headers=c.headers(m.token)).json()["nodes"][0]
    other = "a100-1" if node == "a100-0" else "a100-0"
    body["devices"] = [dict(d, uuid=f"{other}-{d['index']}") for d in body["devices"]]
    assert c.client.put(f"/v1/nodes/{other}/heartbeat", json=body, headers=c.headers(c.tokens.agent)).status_code == 200
    with c.db.begin() as s:
        s.execute(update(NodeRow).where(NodeRow.name == "910b-0").values(last_heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    now = scrape(c)
    assert one(now, "suanli_running_jobs", org=m.org, accelerator_type="nvidia-a100-80g") == 1
    assert one(now, "suanli_allocated_devices", org=m.org, accelerator_type="nvidia-a100-80g") == 2
    assert one(now, "suanli_free_devices", accelerator_type="nvidia-a100-80g") == 16 - 2 - 1
    assert one(now, "suanli_node_unhealthy_devices", node=other) == 1
    assert one(now, "suanli_node_status", node="910b-0", status="NOT_READY") == 1
    assert one(now, "suanli_node_status", node="910b-0", status="READY") == 0
    assert one(now, "suanli_holds_outstanding_fen", org=m.org) > 0
    assert one(now, "suanli_fairshare_factor", org=m.org, project="default") > 0
    assert one(now, "suanli_account_balance_fen", org=m.org) == 1_000_000 - one(now, "suanli_holds_outstanding_fen", org=m.org)
    assert one(now, "suanli_voucher_remaining_fen", org="nova-robotics") == 500_000
    assert one(now, "suanli_program_budget_remaining_fen") == 99_500_000

    launcher.lost = True  # the run ends (center fault: refunded, cost 0) and is settled
    loop.cycle()
    collector._at = None  # noqa: SLF001
    done = scrape(c)
    assert one(done, "suanli_charged_fen_total", org=m.org, accelerator_type="nvidia-a100-80g") == 0
    assert one(done, "suanli_account_balance_fen", org=m.org) == 1_000_000
    assert one(done, "suanli_scheduler_lease_age_seconds") >= 0
    c.db.dispose()


def test_a_failing_read_is_reported_not_raised(tmp_path: Path) -> None:
    """Invariant: when the database cannot be read the scrape still answers, with
    suanli_center_metrics_up 0 and nothing else from the center."""
    c = make_center("", tmp_path, "sqlite")
    broken = CenterCollector(c.db, 60, 3600, ttl_s=0)
    broken._read = lambda now: (_ for _ in ()).throw(RuntimeError("db down"))  # type: ignore[method-assign]
    fams = list(broken.collect())
    assert [f.name for f in fams] == ["suanli_center_metrics_up"] and fams[0].samples[0].value == 0
    c.db.dispose()


def _center(c: Any) -> CenterCollector:
    registry = c.client.app.state.registry
    found = [x for x in registry._collector_to_names if isinstance(x, CenterCollector)]  # noqa: SLF001
    assert len(found) == 1
    return found[0]


def test_loop_records_scheduler_metrics(tmp_path: Path) -> None:
    """Invariants: a leading loop sets is_leader 1, observes every cycle, counts a start with
    its queue wait under its type and size class, counts wait decisions, and counts the jobs
    taken off a lost server; a second loop that cannot take the lease reports is_leader 0
    and observes no cycle."""
    from scheduler.metrics import SchedulerMetrics

    c = make_center("", tmp_path, "sqlite")
    clock, launcher = Clock(), ScriptedLauncher()
    launcher.clock = clock
    metrics, standby_metrics = SchedulerMetrics(), SchedulerMetrics()
    config = LoopConfig(c.settings.jobs_dir, node_timeout_s=60, node_lost_after_s=300)
    loop = SchedulerLoop(c.db, launcher, config, clock=clock, metrics=metrics, holder="a")
    standby = SchedulerLoop(c.db, launcher, config, clock=clock, metrics=standby_metrics, holder="b")
    with c.db.begin() as s:
        s.execute(update(NodeRow).values(last_heartbeat_at=datetime.now(UTC)))
    m = c.new_org()
    for devices in (8, 8, 8):
        c.client.post("/v1/jobs", headers=c.headers(m.token), json={
            "name": "x", "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": devices, "cpus_per_node": 1,
                                       "memory_per_node": 256}, "command": "true"})
    loop.cycle()
    standby.cycle()

    def value(mx: SchedulerMetrics, name: str, **labels: str) -> float:
        v = mx.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    assert value(metrics, "suanli_scheduler_is_leader") == 1 and value(standby_metrics, "suanli_scheduler_is_leader") == 0
    assert value(metrics, "suanli_scheduler_decisions_total", kind="start") == 2
    assert value(metrics, "suanli_scheduler_decisions_total", kind="wait") == 1
    assert value(metrics, "suanli_scheduler_queue_wait_seconds_count", accelerator_type="nvidia-a100-80g", size_class="2-8") == 2
    assert value(metrics, "suanli_scheduler_cycle_duration_seconds_count") == 1
    assert value(standby_metrics, "suanli_scheduler_cycle_duration_seconds_count") == 0
    with c.db.begin() as s:
        s.execute(update(NodeRow).where(NodeRow.name.in_(["a100-0", "a100-1"]))
                  .values(last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=400)))
    clock.t = datetime.now(UTC)
    loop.cycle()
    assert value(metrics, "suanli_scheduler_node_lost_jobs_total") == 2
    c.db.dispose()


def test_program_subsidy_counter_sums_settled_runs(fresh) -> None:  # type: ignore[no-untyped-def]
    """Invariants (SQLite and PostgreSQL): suanli_program_subsidy_fen{program} is, per program,
    the sum of what its vouchers paid in every settled run (the runs' `programs` parts, a run
    paid by two programs counting for each), added up by the database's JSON functions and
    equal to a Python sum over the same rows; a program no run used shows 0. (A database of
    its own: the runs are written as rows, without the ledger moves other tests reconcile.)"""
    from sqlalchemy import select

    from suanli.db.models import BillingRunRow, ProgramRow
    from suanli.db.store import billing as billing_store
    from tests.integration.test_cluster_api import cancel_pending, insert_job, new_type
    from tests.integration.test_programs_api import create

    center = fresh
    names = [create(center)["name"] for _ in range(3)]
    with center.db.begin() as s:
        ids = {p.name: p.id for p in s.scalars(select(ProgramRow))}
    p1, p2, p3 = (ids[n] for n in names)
    now = datetime.now(UTC)
    m = center.new_org()
    t = new_type(center)
    job_ids = [insert_job(center, m, t) for _ in range(2)]
    with center.db.begin() as s:
        for job_id, parts in zip(job_ids, [{str(p1): 700}, {str(p1): 50, str(p2): 1234}]):
            job = s.get(JobRow, job_id)
            s.add(BillingRunRow(job_id=job_id, run=0, org_id=job.org_id, project_id=job.project_id, user_id=job.user_id,
                                accelerator_type=t, devices_milli=1000, started_at=now - timedelta(hours=1), ended_at=now,
                                duration_ms=3_600_000, price_fen_per_device_hour=4000, cost_fen=4000,
                                cash_fen=4000 - sum(parts.values()), subsidy_fen=sum(parts.values()), programs=parts,
                                center_fault=False, settled_at=now))
    cancel_pending(center, job_ids)
    with center.db.begin() as s:
        by_db = billing_store.subsidy_by_program(s)
        by_python: dict[int, int] = {}
        for parts in s.scalars(select(BillingRunRow.programs)):
            for k, v in (parts or {}).items():
                by_python[int(k)] = by_python.get(int(k), 0) + int(v)
    assert by_db == by_python
    assert (by_db[p1], by_db[p2], by_db.get(p3, 0)) == (750, 1234, 0)
    _center(center)._at = None  # noqa: SLF001 - a fresh read
    got = scrape(center)
    for name, pid in ids.items():
        assert one(got, "suanli_program_subsidy_fen_total", program=name) == by_db.get(pid, 0)
