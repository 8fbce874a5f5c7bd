"""One scheduling cycle: load a snapshot → `policy(snapshot, now)` → apply → reconcile.

Invariants:
- The policy is called with a snapshot and a time only; the live loop and the simulator
  differ by the injected `Launcher` and `Clock`, never by a flag.
- Each decision is applied in its own short transaction: the PENDING→STARTING change is
  version-guarded and claims the devices (a claimed device makes the whole transaction roll
  back), and only after commit is the launcher asked to start the runners.
- Pending reasons are written only when they change; status changes always carry an event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import IntegrityError

from scheduler.launcher import Launcher, LaunchError
from scheduler.policy import decide
from scheduler.reconciler import Reconciler
from scheduler.types import Decisions, Job, JobStatus, LaunchSpec, Snapshot, Start, Vendor
from suanli.db.engine import Database
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy

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
    finished: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class LoopConfig:
    jobs_dir: Path
    starting_timeout_s: float = 120.0


class SchedulerLoop:
    def __init__(
        self,
        db: Database,
        launcher: Launcher,
        config: LoopConfig,
        clock: Clock | None = None,
        policy: Policy = decide,
    ) -> None:
        self.db = db
        self.launcher = launcher
        self.config = config
        self.clock = clock or SystemClock()
        self.policy = policy
        self.reconciler = Reconciler(db, launcher, self.clock, config.starting_timeout_s)

    def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        report = CycleReport()
        now = self.clock.now()
        with self.db.begin() as s:  # load
            loaded = job_store.load_snapshot(s)
            vendors = tenancy.accelerator_vendors(s)
        decisions = self.policy(loaded.snapshot, now.timestamp())  # process
        for start in decisions.starts:  # apply
            if self._apply_start(start, loaded.versions[start.job_id], loaded.node_ids, vendors, now):
                report.started.append(start.job_id)
        changed = [w for w in decisions.waits if loaded.reasons.get(w.job_id) != w.reason]
        if changed:
            with self.db.begin() as s:
                for w in changed:
                    job_store.set_pending_reason(s, w.job_id, w.reason)
        report.waiting = len(decisions.waits)
        report.finished = self.reconciler.sync()
        report.seconds = time.perf_counter() - t0
        return report

    def _apply_start(
        self, d: Start, version: int, node_ids: dict[str, int], vendors: dict[str, Vendor], now: datetime
    ) -> bool:
        try:
            with self.db.begin() as s:
                price = tenancy.current_price(s, d.accelerator_type, now)
                reason = d.reason if price else f"{d.reason} (no price set for {d.accelerator_type}: billed at 0)"
                ok = job_store.apply_transition(
                    s, d.job_id, version, JobStatus.PENDING, JobStatus.STARTING, reason, now,
                    accelerator_type=d.accelerator_type,
                    price_fen_per_device_hour=price.fen_per_device_hour if price else 0,
                    scheduled_at=now,
                )
                if not ok:
                    return False  # cancelled (or otherwise changed) since the snapshot
                job_store.claim(s, d.job_id, d, node_ids)
                job = job_store.get_job(s, d.job_id)
        except IntegrityError:
            log.warning("job %s: devices already claimed; will retry next cycle", d.job_id)
            return False
        assert job is not None
        try:
            self.launcher.launch(self.launch_spec(job, vendors[d.accelerator_type]))
        except LaunchError as e:
            self.reconciler.fail_launch(job, f"launch failed: {e}")
            return False
        return True

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
        )

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Cycle until `stop` is set; a failing cycle is logged and retried next interval."""
        while not stop.is_set():
            try:
                report = self.cycle()
                if report.started or report.finished:
                    log.info("cycle: started %s, finished %s, %d waiting (%.3fs)",
                             report.started, report.finished, report.waiting, report.seconds)
            except Exception:  # noqa: BLE001 - keep scheduling; the next cycle reloads everything
                log.exception("scheduling cycle failed")
            stop.wait(interval_s)
