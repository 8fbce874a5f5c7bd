"""One scheduling cycle: load a snapshot → `policy(snapshot, now)` → apply → reconcile.

Invariants:
- The policy is called with a snapshot and a time only; the live loop and the simulator
  differ by the injected `Launcher` and `Clock`, never by a flag.
- One cycle's starts are applied in ONE transaction (one lease check, one commit), each
  job inside its own SAVEPOINT: its PENDING→STARTING change is version-guarded, with its
  event, device claims and hold in the same savepoint. A job whose device turned out claimed
  (`IntegrityError`/`DeviceBusy`) or whose org cannot cover the hold (`InsufficientFunds`,
  then shown as `insufficient_funds`) rolls back only its savepoint: none of its transition,
  claims or hold is written, and the others commit. Only after commit is the launcher asked
  to start the runners, in the policy's order; a refused launch ends that job through
  `Reconciler.fail_launch`. (One transaction per job cost ~11 ms each on SQLite, mostly the
  commit: it capped the start rate near 30/s.)
- Pending reasons, codes, priorities and estimates are written only when they change (or
  every `refresh_s`); status changes always carry an event.
- Preemptions are applied first (PREEMPTING, stop signal with the grace period), so their
  devices are stopping before anything else happens.
- Leader election (`scheduler.leader`): several loops may run; only the one holding the
  lease (`scheduler_lease`: holder, renewed_at, fencing token) acts. A loop that does not
  lead does nothing but try to take the lease each cycle (a compare-and-set: free, expired
  after `lease_timeout_s`, or already under its name; the token grows by one) — no snapshot,
  no launch, no reconcile. Each cycle that completes renews the lease (compare-and-set on
  holder and token, at most every `lease_renew_s`), which `/readyz` checks; a failing cycle
  does not renew it, so a scheduler that keeps failing shows as not ready and is replaced.
- Fencing: every transaction of the leader (snapshot, starts with their claims, preemptions,
  waits, the reconciler's endings, meters, node sweeps) runs on `FencedDatabase`, whose first
  statement checks the lease's holder and token: one primary-key read, share-locked on
  PostgreSQL (SQLite's `BEGIN IMMEDIATE` serializes writers anyway). A loop that lost the
  lease while paused gets `NotLeader`, its transaction rolls back, and it steps down.
- Crash recovery: on taking the lease, and every `recover_every` cycles, runners on Ray whose
  job holds no devices in the database are killed (`scheduler.recovery.recover`); jobs
  holding devices without runners go through the reconciler (LOST / starting timeout); on
  taking the lease, runners of STARTING jobs are asked to start again (idempotent), as the
  previous leader may have died before its `start` reached them.
- Engine node loss: each leading cycle first asks the launcher which servers' Ray nodes died
  (`Reconciler.sweep_engine`); their jobs are requeued or end NODE_LOST, and the policy sees
  those servers unschedulable until Ray has a live node for them again.
- Cadence (`run`, `next_wait`): after a cycle that started or ended jobs while others wait,
  the next cycle runs at once; otherwise the loop waits `interval_s`. A launcher with a
  `prefetch()` is asked for its runners' states at the start of each leading cycle, so the
  round trips overlap the snapshot and the policy; `sync` collects them (`scheduler.supervisor`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quota.programs import expire_vouchers
from quota.settlement import InsufficientFunds, bill_to_json, place_hold
from quota.types import Price
from scheduler.launcher import Launcher, LaunchError
from scheduler.metrics import SchedulerMetrics
from scheduler.leader import FencedDatabase, Lease, NotLeader, default_holder
from scheduler.policy import decide
from scheduler.policy.fragment import Workload
from scheduler.reconciler import Reconciler
from scheduler.recovery import RunnerDirectory, recover
from scheduler.types import Decisions, Job, JobStatus, LaunchSpec, PolicyConfig, Snapshot, Start, Vendor, Wait
from suanli.code import blob_path
from suanli.db.engine import Database, savepoint
from suanli.db.models import JobRow
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.db.store.snapshot import Loaded, load_snapshot, recent_workload

log = logging.getLogger(__name__)

Policy = Callable[[Snapshot, float], Decisions]


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class CycleReport:
    started: list[int] = field(default_factory=list)
    waiting: int = 0
    preempted: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    seconds: float = 0.0
    leader: bool = True  # False: this loop did not hold the lease and did nothing else
    orphans: list[int] = field(default_factory=list)  # jobs whose leftover runners were killed


@dataclass
class LoopConfig:
    jobs_dir: Path
    starting_timeout_s: float = 120.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    half_life_s: float = 7 * 24 * 3600
    # Pending jobs' priority and estimate are rewritten at most this often unless their
    # reason changes (priorities move with age every cycle; the database need not).
    refresh_s: float = 30.0
    # Running jobs are charged for their time so far this often (0: only at the end).
    meter_interval_s: float = 300.0
    # Runs lost through the center's fault cost nothing (False: charged for the time they ran).
    refund_center_faults: bool = True
    # The scheduler lease is renewed at most this often (a third of scheduler_lease_timeout_s).
    lease_renew_s: float = 10.0
    # Another loop takes the lease over once it has not been renewed for this long
    # (`scheduler_lease_timeout_s`); the lease row's name (tests use their own).
    lease_timeout_s: float = 30.0
    lease_name: str = "scheduler"
    # The leader looks for orphan runners on Ray when it takes the lease and every this many
    # cycles (0: only when it takes the lease).
    recover_every: int = 60
    # Servers whose last heartbeat is older than this are not placed on (DOWN); None places
    # on every READY server (tests without agents).
    node_timeout_s: float | None = None
    # With `node_timeout_s`: a server silent this long is lost and its jobs are requeued or
    # ended NODE_LOST (`Reconciler.sweep_nodes`); 0 never gives up on a server.
    node_lost_after_s: float = 0.0
    # Ray's node table (dead engine nodes, `Reconciler.sweep_engine`) is read at most this
    # often while every server is up; 0: every cycle.
    engine_check_s: float = 2.0
    # Fragmentation-aware placement (FGD less the scarcity penalty, the policy's "auto"
    # placement) measures against the shapes of the jobs submitted this long ago or since,
    # re-read every `workload_refresh_s`; 0: no target workload, best fit by free devices.
    workload_window_s: float = 7 * 24 * 3600
    workload_refresh_s: float = 600.0
    # Uploaded job code (`<code_dir>/<sha256>.zip`, suanli/code.py); None: `<jobs_dir>/../code`.
    code_dir: Path | None = None


def next_wait(report: CycleReport, interval_s: float) -> float:
    """Seconds to wait before the next cycle: none after a cycle that started or ended jobs
    while others wait (the devices just freed, or the next jobs in line, must not sit out an
    interval), else `interval_s`, so an idle or blocked queue never spins: a cycle that
    changed nothing always waits."""
    return 0.0 if (report.started or report.finished) and report.waiting else interval_s


class SchedulerLoop:
    def __init__(
        self,
        db: Database,
        launcher: Launcher,
        config: LoopConfig,
        clock: Clock | None = None,
        policy: Policy = decide,
        holder: str | None = None,
        runners: RunnerDirectory | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.metrics = metrics  # None: record nothing (tests, the simulator)
        self.holder = holder or default_holder()
        self.lease = Lease(db, self.holder, config.lease_timeout_s, config.lease_name)
        self.db = FencedDatabase(db, self.lease)  # every unit of work below checks the lease first
        self.runners = runners  # None: no orphan sweep (launchers without a directory)
        self._cycles = 0
        self.launcher = launcher
        self.config = config
        self.clock = clock or SystemClock()
        self.policy = policy
        self.reconciler = Reconciler(self.db, launcher, self.clock, config.starting_timeout_s, config.half_life_s,
                                     refund_center_faults=config.refund_center_faults, engine_check_s=config.engine_check_s)
        self._written: dict[int, float] = {}  # pending job -> when its priority was last written
        self._metered_at: datetime | None = None
        self._leased_at: datetime | None = None
        self._workload: Workload | None = None  # the target workload, as of `_workload_at`
        self._workload_at: datetime | None = None

    def cycle(self) -> CycleReport:
        """One cycle if this loop leads (taking the lease if it can), else nothing."""
        t0 = time.perf_counter()
        report = CycleReport()
        now = self.clock.now()
        if not self.lease.leading:
            if not self.lease.acquire(now):
                report.leader = False
                return report
            self._leased_at, self._cycles = now, 0  # recover first: a new term starts from what Ray has
        try:
            self._lead(report, now)
        except NotLeader as e:  # a transaction found the lease taken over: it rolled back
            self.lease.step_down(str(e))
            report.leader = False
        report.seconds = time.perf_counter() - t0
        if self.metrics:
            self.metrics.leader.set(1 if report.leader and self.lease.leading else 0)
            if self.lease.leading:
                self.metrics.cycle.observe(report.seconds)
        return report

    def _lead(self, report: CycleReport, now: datetime) -> None:
        if self.runners is not None and (self._cycles == 0 or (self.config.recover_every and
                                                               self._cycles % self.config.recover_every == 0)):
            rec = recover(self.db, self.launcher, self.runners, resume=self._cycles == 0)
            report.orphans = sorted(rec.orphans)
            if rec.resumed:
                log.info("new term: asked the runners of STARTING jobs %s to start", rec.resumed)
        self._cycles += 1
        prefetch = getattr(self.launcher, "prefetch", None)
        if prefetch is not None:  # the runners' states travel while the snapshot is read and decided
            prefetch()
        gone = self.reconciler.sweep_engine(now)  # Ray nodes that died: their jobs first
        if self.metrics and gone:
            self.metrics.lost.inc(len(gone))
        if self.config.node_timeout_s is not None:  # lost servers first: their jobs' devices are not running anything
            lost = self.reconciler.sweep_nodes(now, self.config.node_timeout_s, self.config.node_lost_after_s)
            if self.metrics and lost:
                self.metrics.lost.inc(len(lost))
        with self.db.begin() as s:  # load
            loaded = load_snapshot(s, now, self.config.policy, self.config.half_life_s, self.config.node_timeout_s)
            vendors = tenancy.accelerator_vendors(s)
            if self.config.workload_window_s > 0 and (self._workload_at is None or not 0 <= (
                    now - self._workload_at).total_seconds() < self.config.workload_refresh_s):
                self._workload = recent_workload(s, now, self.config.workload_window_s)
                self._workload_at = now
        if self._workload is not None:  # (never read with workload_window_s 0)
            loaded = replace(loaded, snapshot=replace(loaded.snapshot, workload=self._workload))
        if self.reconciler.down:  # a server without a live Ray node cannot run anything
            snap = loaded.snapshot
            nodes = tuple(replace(n, schedulable=False) if n.name in self.reconciler.down else n for n in snap.nodes)
            loaded = replace(loaded, snapshot=replace(snap, nodes=nodes, capacity=None))
        decisions = self.policy(loaded.snapshot, now.timestamp())  # process
        for p in decisions.preemptions:  # apply
            self._apply_preempt(p.job_id, p.reason, loaded, now)
        report.started = self._apply_starts(decisions.starts, loaded, vendors, now)
        self._apply_waits(decisions.waits, loaded, now)
        report.waiting = len(decisions.waits)
        if self.metrics:
            self.metrics.waiting(report.waiting)
        report.preempted = [p.job_id for p in decisions.preemptions]
        report.finished = self.reconciler.sync()
        if self.config.meter_interval_s and (self._metered_at is None or
                                             (now - self._metered_at).total_seconds() >= self.config.meter_interval_s):
            self.reconciler.meter(now)
            with self.db.begin() as s:  # what expired vouchers hold goes back to their programs
                expire_vouchers(s, now)
            self._metered_at = now
        if self._leased_at is None or (now - self._leased_at).total_seconds() >= self.config.lease_renew_s:
            if not self.lease.renew(now):
                report.leader = False
                return
            self._leased_at = now

    def _apply_preempt(self, job_id: int, reason: str, loaded: Loaded, now: datetime) -> None:
        running = next(j for j in loaded.snapshot.running if j.id == job_id)
        grace = loaded.grace[job_id]
        with self.db.begin() as s:
            job = job_store.get_job(s, job_id)
            if job is None or job.version != loaded.versions[job_id] or job.status not in (JobStatus.RUNNING, JobStatus.STARTING):
                return  # it moved on since the snapshot
            if not job_store.apply_transition(s, job_id, job.version, job.status, JobStatus.PREEMPTING, reason, now,
                                              stop_by=now + timedelta(seconds=grace)):
                return
        self.launcher.stop(job_id, len(running.placements), "preempt", grace)
        if self.metrics:
            self.metrics.preempted(reason)

    def _apply_waits(self, waits: tuple[Wait, ...], loaded: Loaded, now: datetime) -> None:
        t = now.timestamp()
        rows = []
        for w in waits:
            est = datetime.fromtimestamp(w.estimated_start, UTC) if w.estimated_start is not None else None
            shown = loaded.shown.get(w.job_id)
            fresh = shown == (w.reason, str(w.code), est) and t - self._written.get(w.job_id, 0.0) < self.config.refresh_s
            if fresh:
                continue
            self._written[w.job_id] = t
            rows.append({
                "b_id": w.job_id, "reason": w.reason, "reason_code": str(w.code), "estimated_start_at": est,
                "priority": w.priority.value if w.priority else None,
                "priority_factors": [list(f) for f in w.priority.factors] if w.priority else None,
            })
        if rows:
            with self.db.begin() as s:
                job_store.show_pending(s, rows)
        if len(self._written) > 4 * max(1, len(waits)):  # forget jobs that are no longer pending
            pending = {w.job_id for w in waits}
            self._written = {k: v for k, v in self._written.items() if k in pending}

    def _apply_starts(self, starts: tuple[Start, ...], loaded: Loaded, vendors: dict[str, Vendor],
                      now: datetime) -> list[int]:
        """Write the cycle's starts in one transaction, a savepoint each, then launch what
        committed (in order). Returns the ids launched."""
        if not starts:
            return []
        claimed: list[tuple[Start, Job]] = []
        prices: dict[str, Price | None] = {}
        with self.db.begin() as s:
            for d in starts:
                try:
                    with savepoint(s):
                        job = self._start_in(s, d, loaded.versions[d.job_id], loaded.node_ids, prices, now)
                except (IntegrityError, job_store.DeviceBusy) as e:  # only this job's savepoint rolled back
                    log.warning("job %s: devices already claimed (%s); will retry next cycle", d.job_id, e)
                    continue
                except InsufficientFunds as e:  # the policy's view of the funds was stale: wait
                    job_store.show_pending(s, [{"b_id": d.job_id, "reason": f"insufficient funds: {e}",
                                                "reason_code": "insufficient_funds", "estimated_start_at": None,
                                                "priority": d.priority.value if d.priority else None,
                                                "priority_factors": [list(f) for f in d.priority.factors]
                                                if d.priority else None}])
                    continue
                if job is not None:
                    claimed.append((d, job))
        started = []
        for d, job in claimed:  # committed: now the runners may start
            try:
                self.launcher.launch(self.launch_spec(job, vendors[d.accelerator_type]))
            except LaunchError as e:
                self.reconciler.fail_launch(job, f"launch failed: {e}")
                continue
            started.append(job.id)
            if self.metrics:
                self.metrics.started(d.accelerator_type, job.resources.total_devices * job.resources.device_milli / 1000,
                                     (now - job.submitted_at).total_seconds())
        return started

    @staticmethod
    def _start_in(s: Session, d: Start, version: int, node_ids: dict[str, int], prices: dict[str, Price | None],
                  now: datetime) -> Job | None:
        """One job's start inside the batch's savepoint: the guarded transition with its event,
        the claims, the hold and the bill. None when the job moved on since the snapshot."""
        if d.accelerator_type not in prices:  # one look-up per type and cycle (same `now`)
            prices[d.accelerator_type] = tenancy.current_price(s, d.accelerator_type, now)
        price = prices[d.accelerator_type]
        reason = d.reason if price else f"{d.reason} (no price set for {d.accelerator_type}: billed at 0)"
        prio = d.priority
        ok = job_store.apply_transition(
            s, d.job_id, version, JobStatus.PENDING, JobStatus.STARTING, reason, now,
            accelerator_type=d.accelerator_type,
            price_fen_per_device_hour=price.fen_per_device_hour if price else 0,
            scheduled_at=now, reason_code="", estimated_start_at=None,
            priority=prio.value if prio else None,
            priority_factors=[list(f) for f in prio.factors] if prio else None,
        )
        if not ok:
            return None  # cancelled (or otherwise changed) since the snapshot
        job_store.claim(s, d.job_id, d, node_ids)
        # What the hold needs, in one primary-key read (not the whole job twice: ~1 ms a start).
        row = s.execute(select(JobRow.org_id, JobRow.restart_count, JobRow.devices_per_node, JobRow.node_count,
                               JobRow.device_milli, JobRow.time_limit_s).where(JobRow.id == d.job_id)).one()
        hold = place_hold(s, org_id=row.org_id, job_id=d.job_id, run=row.restart_count,
                          devices=row.devices_per_node * row.node_count, device_milli=row.device_milli,
                          time_limit_s=row.time_limit_s, price=price.fen_per_device_hour if price else 0,
                          accelerator_type=d.accelerator_type, now=now)
        job_store.set_bill(s, d.job_id, hold=bill_to_json(hold) | {"at": now.isoformat()}, run_charged=None, meter_seq=0)
        return job_store.get_job(s, d.job_id)

    def launch_spec(self, job: Job, vendor: Vendor) -> LaunchSpec:
        assert job.accelerator_type is not None
        return LaunchSpec(
            job_id=job.id,
            name=job.name,
            org=job.org,
            vendor=vendor,
            accelerator_type=job.accelerator_type,
            placements=job.placements,
            cpus_per_node=job.resources.cpus_per_node,
            memory_mb_per_node=job.resources.memory_mb_per_node,
            command=job.command,
            working_dir=job.working_dir,
            env=job.env,
            job_dir=str((self.config.jobs_dir / str(job.id)).resolve()),
            time_limit_s=job.time_limit_s,
            grace_s=job.grace_s,
            restart_count=job.restart_count,
            device_milli=job.resources.device_milli,
            stop_signal=job.stop_signal,
            code_zip=str(blob_path(self.config.code_dir or self.config.jobs_dir.parent / "code", job.code).resolve())
            if job.code else None,
        )

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Cycle until `stop` is set; a failing cycle is logged and retried next interval. On
        stop the lease is given up, so a standby loop takes over at once."""
        while not stop.is_set():
            try:
                report = self.cycle()
                if report.started or report.finished or report.preempted or report.orphans:
                    log.info("cycle: started %s, preempted %s, finished %s, orphans killed %s, %d waiting (%.3fs)",
                             report.started, report.preempted, report.finished, report.orphans, report.waiting,
                             report.seconds)
            except Exception:  # noqa: BLE001 - keep scheduling; the next cycle reloads everything
                log.exception("scheduling cycle failed")
                report = CycleReport()
            stop.wait(next_wait(report, interval_s))
        try:
            self.lease.release()
        except Exception:  # noqa: BLE001 - the lease then expires by itself
            log.exception("could not release the scheduler lease")
