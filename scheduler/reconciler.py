"""Passive sync of what the launcher (Ray) reports into the database.

Invariants:
- For every job holding devices (STARTING, RUNNING, CANCELLING) the runner's state is read
  once per cycle and the database follows it through `scheduler.states` only.
- Ending a job is all-or-nothing: its status (via RUNNING if the start was never seen), its
  times and exit code, the release of its device claims and its charge (ledger key
  `charge:job:<id>`, so it is charged at most once). In `sync`, every run that ended this
  cycle and every start first seen are written in ONE transaction (one lease check, one
  commit), each job in its own SAVEPOINT; runners are torn down only after that commit.
- A stale version rolls that job's writes back (its savepoint, or its own transaction
  elsewhere), and the others stand; the next cycle tries it again with fresh state. A job is charged only for time its process really ran; a job whose runner was lost
  is not charged (the center's fault, not the user's).
- A server silent for `node_lost_after_s` is LOST: every job on it ends through `node_lost`
  (requeued or NODE_LOST, never charged while `refund_center_faults`), before `sync` reads
  the runners, so a lost server's jobs never end as plain failures.
- A server whose engine node died (`NodeWatch.servers_down`: on Ray, its labelled node is dead
  in Ray's node table) is lost the same way, at once (`sweep_engine`, each cycle before
  `sync`; and in `sync` for a runner lost in between): its jobs go through `node_lost`, never
  "runner lost". A runner lost while its server's node is alive is the runner's own crash:
  FAILED, uncharged. `node_lost` tears down every rank, so a multi-node job's other ranks
  leave no process behind.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quota.settlement import bill_from_json, bill_to_json, run_cost, settle
from quota.settlement import meter as meter_run
from scheduler.launcher import Launcher, NodeWatch
from scheduler.types import ACTIVE, Job, JobStatus, RunnerPhase, RunnerState
from suanli.db.engine import Database, savepoint
from suanli.db.store import jobs as job_store
from suanli.db.store import nodes as node_store

if TYPE_CHECKING:
    from scheduler.loop import Clock

log = logging.getLogger(__name__)
ENGINE_LOST = "its Ray node died: no work placed on it; its jobs are requeued or ended"
S = JobStatus
MAX_REQUEUES = 3


class Stale(Exception):
    """The job changed under us; roll back and look again next cycle."""


def _ts(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def outcome(job: Job, st: RunnerState) -> tuple[JobStatus, str]:
    """Where a job goes when its runner has exited, and why. In a multi-node job whose rank
    failed by itself (`extra["failed_rank"]`), the job fails with that rank's code and the
    reason names the rank (the others were stopped because of it)."""
    bad = st.extra.get("failed_rank")
    ranks = int(st.extra.get("ranks", 1))  # type: ignore[call-overload]
    if bad is not None and ranks > 1 and st.started_at is not None and job.status not in (S.CANCELLING, S.PREEMPTING):
        what = f"could not launch ({st.error})" if st.error else f"exited with code {st.exit_code}"
        return S.FAILED, f"rank {bad} {what}; the other ranks were stopped"
    if st.error and st.started_at is None:
        if job.status is S.CANCELLING:
            return S.CANCELLED, f"cancelled before the process started ({st.error})"
        if job.status is S.PREEMPTING:
            return (S.PENDING if job.requeue else S.PREEMPTED), f"preempted before the process started ({st.error})"
        return S.FAILED, f"launch failed: {st.error}"
    code = st.exit_code
    if st.stopped_by is not None and job.status is S.CANCELLING or st.stopped_by in ("cancel", "shutdown"):
        return S.CANCELLED, f"process stopped after cancel (exit code {code})"
    if st.stopped_by == "preempt":
        if job.requeue:
            return S.PENDING, f"requeued after preemption (exit code {code}); keeps its place by submit time"
        return S.PREEMPTED, f"preempted (exit code {code}); not requeued as the job asked"
    if st.stopped_by == "timeout":
        return S.TIMEOUT, f"time limit of {job.time_limit_s}s reached; process stopped (exit code {code})"
    if code == 0:
        return S.SUCCEEDED, "process exited with code 0"
    return S.FAILED, f"process exited with code {code}"


class Reconciler:
    def __init__(self, db: Database, launcher: Launcher, clock: Clock, starting_timeout_s: float,
                 half_life_s: float = 7 * 24 * 3600, refund_center_faults: bool = True, engine_check_s: float = 0.0) -> None:
        self.db = db
        # Ray's node table is read at most this often while every server is up (0: every
        # sweep): on a large cluster one read is the whole table, and cycles run back to back.
        self.engine_check_s = engine_check_s
        self._engine_checked_at: datetime | None = None
        self.refund_center_faults = refund_center_faults
        self.launcher = launcher
        self.clock = clock
        self.starting_timeout_s = starting_timeout_s
        self.half_life_s = half_life_s
        self.down: set[str] = set()  # servers whose engine node is dead, as of the last sweep

    def sweep_engine(self, now: datetime) -> list[int]:
        """Servers whose engine (Ray) node died: an event on each when first seen, and every
        job holding devices on them ended or requeued through `node_lost`. `self.down` then
        lists them (the loop places nothing there). Returns the ids of the jobs taken off.
        Asks the engine at most every `engine_check_s` while no server is down, every sweep
        while one is (so a server whose node comes back is placed on again at once)."""
        if not isinstance(self.launcher, NodeWatch):
            return []
        last = self._engine_checked_at
        if not self.down and last is not None and 0 <= (now - last).total_seconds() < self.engine_check_s:
            return []  # checked lately and all was up (a dead runner is also seen by its poll)
        self._engine_checked_at = now
        with self.db.begin() as s:
            rows = {r.id: r.name for r in node_store.node_rows(s)}
        down = self.launcher.servers_down(set(rows.values()))
        fresh = down - self.down
        self.down = down
        if not down:
            return []
        ids = [i for i, name in rows.items() if name in down]
        with self.db.begin() as s:
            for i in ids:
                if rows[i] in fresh:
                    node_store.add_event(s, i, "engine_lost", ENGINE_LOST, now)
            victims = set(node_store.jobs_on_nodes(s, ids))
            jobs = [j for j in job_store.jobs_in(s, list(ACTIVE)) if j.id in victims] if victims else []
        ended = []
        for job in jobs:
            where = ", ".join(sorted({p.node for p in job.placements} & down)) or "its server"
            try:
                self.node_lost(job, where, now, cause="its Ray node died")
                ended.append(job.id)
            except Stale:
                log.info("job %s changed while its server's Ray node was found dead; retrying next cycle", job.id)
        return ended

    def sync(self) -> list[int]:
        with self.db.begin() as s:
            active = job_store.jobs_in(s, list(ACTIVE))
            scheduled = job_store.scheduled_at(s, [j.id for j in active])
        if not active:
            return []
        states = self.launcher.poll({j.id: len(j.placements) for j in active})
        finished: set[int] = set()
        batch: list[tuple[Job, RunnerState]] = []  # ends and starts seen: written together below
        now = self.clock.now()
        for job in active:
            st = states[job.id]
            try:
                if self._sync_one(job, st, scheduled.get(job.id), now, batch):
                    finished.add(job.id)
            except Stale:
                log.info("job %s changed while syncing; retrying next cycle", job.id)
        finished |= self._write_batch(batch, now)
        return [j.id for j in active if j.id in finished]

    def _write_batch(self, batch: list[tuple[Job, RunnerState]], now: datetime) -> set[int]:
        """Runs that exited (ended) and runners first seen running (STARTING → RUNNING), in one
        transaction with a savepoint each; then the ended runs' runners are released. Returns
        the ids of the jobs ended."""
        if not batch:
            return set()
        ended: list[Job] = []
        with self.db.begin() as s:
            for job, st in batch:
                try:
                    with savepoint(s):
                        if st.phase is RunnerPhase.EXITED:
                            self.finish_in(s, job, st, now)
                        else:
                            self._step(s, job, S.STARTING, S.RUNNING, "process started", now, started_at=_ts(st.started_at))
                except Stale:  # only this job's savepoint rolled back
                    log.info("job %s changed while syncing; retrying next cycle", job.id)
                    continue
                if st.phase is RunnerPhase.EXITED:
                    ended.append(job)
        for job in ended:  # committed: the runners may go
            self.launcher.release(job.id, len(job.placements))
        return {j.id for j in ended}

    def _sync_one(self, job: Job, st: RunnerState, scheduled_at: datetime | None, now: datetime,
                  batch: list[tuple[Job, RunnerState]]) -> bool:
        """Act on one job's runner state; True when it ended here. Ends and first-seen starts
        are queued in `batch` (written by `_write_batch`), the rarer paths write at once."""
        ranks = len(job.placements)
        if st.phase is RunnerPhase.EXITED:
            batch.append((job, st))
            return False
        if st.phase is RunnerPhase.LOST:
            self._lost(job, st, now)
            return True
        if job.status is S.CANCELLING:
            self.launcher.stop(job.id, ranks, "cancel", job.grace_s)
            return False
        if job.status is S.PREEMPTING:
            self.launcher.stop(job.id, ranks, "preempt", job.grace_s)
            return False
        if st.extra.get("failed_rank") is not None:  # one rank failed: stop the rest of the gang
            self.launcher.stop(job.id, ranks, "peer_failed", job.grace_s)
        if st.phase is RunnerPhase.RUNNING and job.status is S.STARTING:
            batch.append((job, st))
            return False
        if (
            st.phase is RunnerPhase.STARTING
            and job.status is S.STARTING
            and scheduled_at is not None
            and now - scheduled_at > timedelta(seconds=self.starting_timeout_s)
        ):
            self.launcher.release(job.id, ranks)
            with self.db.begin() as s:
                self._requeue(s, job, f"the runner did not start within {self.starting_timeout_s:.0f}s", now)
        return False

    def _requeue(self, s: Any, job: Job, why: str, now: datetime) -> None:
        """Back to PENDING with its submit time kept, or FAILED after `MAX_REQUEUES` tries
        (a runner that can never start must not be retried forever)."""
        self._close_run(s, job, None, now, now, center_fault=True)
        if job_store.requeue_count(s, job.id) >= MAX_REQUEUES:
            self._step(s, job, S.STARTING, S.FAILED, f"launch failed {MAX_REQUEUES + 1} times; last: {why}", now, ended_at=now)
        else:
            # A new run number: the next attempt holds and settles under its own keys.
            self._step(s, job, S.STARTING, S.PENDING, f"requeued: {why}", now,
                       accelerator_type=None, price_fen_per_device_hour=None, scheduled_at=None,
                       restart_count=job.restart_count + 1)
            job_store.clear_placements(s, job.id)
        job_store.release(s, job.id)

    def finish_in(self, s: Any, job: Job, st: RunnerState, now: datetime) -> None:
        """End the run inside the caller's transaction (all or nothing: `Stale` must roll back
        its savepoint): final status (or back to the queue after a preemption), charge and
        usage for the time it ran, claims released. The caller releases the runners after commit."""
        to, reason = outcome(job, st)
        started, ended = _ts(st.started_at), _ts(st.ended_at) or now
        status, version = job.status, job.version
        if status is S.STARTING and started is not None:
            # The process started and ended between two polls: record both steps.
            self._step(s, job, S.STARTING, S.RUNNING, "process started", now, started_at=started)
            status, version = S.RUNNING, version + 1
        fields: dict[str, Any] = {"ended_at": ended, "exit_code": st.exit_code, "started_at": started, "stop_by": None}
        cost, subsidy = self._close_run(s, job, started, ended, now)
        if started is not None and job.accelerator_type is not None:
            fields["cost_fen"] = (job.cost_fen or 0) + cost
            fields["subsidy_fen"] = (job.subsidy_fen or 0) + subsidy
        if to is S.PENDING:  # requeued: the next run is decided afresh, its age kept
            fields.update(accelerator_type=None, price_fen_per_device_hour=None, scheduled_at=None,
                          started_at=None, ended_at=None, restart_count=job.restart_count + 1)
        if not job_store.apply_transition(s, job.id, version, status, to, reason, now, **fields):
            raise Stale(job.id)
        job_store.release(s, job.id)
        if to is S.PENDING:
            job_store.clear_placements(s, job.id)

    def _close_run(self, s: Any, job: Job, started: datetime | None, ended: datetime, now: datetime,
                   center_fault: bool = False) -> tuple[int, int]:
        """Settle the run's hold — charge what it cost (nothing if it never started or was
        lost through the center's fault, refunding what metering took) and release the rest —
        and add its usage to the project's fair share. Returns (cost, paid by vouchers)."""
        hold = bill_from_json(job.hold)
        center_fault = center_fault and self.refund_center_faults  # else charged like any run
        ran = started is not None and job.accelerator_type is not None and not center_fault
        cost = 0
        if ran:
            assert started is not None
            cost = run_cost(job.resources.total_devices, job.resources.device_milli, started, ended,
                            job.price_fen_per_device_hour or 0)
            weight = job_store.billing_weight(s, job.accelerator_type)  # type: ignore[arg-type]
            units = job.resources.total_milli / 1000 * weight * max(0.0, (ended - started).total_seconds())
            job_store.add_usage(s, job_store.job_project_id(s, job.id), units, ended, self.half_life_s)
        final = settle(s, org_id=self._org_id(s, job), job_id=job.id, run=job.restart_count, hold=hold,
                       charged=bill_from_json(job.run_charged), cost=cost, now=now, center_fault=not ran)
        job_store.set_bill(s, job.id, hold=None, run_charged=None, meter_seq=0)
        if job.hold is not None and job.accelerator_type is not None:
            job_store.record_run(s, job, started, ended, final, center_fault=not ran, now=now)
        return final.total_fen, final.voucher_fen

    def meter(self, now: datetime) -> int:
        """Charge running jobs for their time so far (balances stay live); returns how many."""
        with self.db.begin() as s:
            running = job_store.jobs_in(s, [S.RUNNING])
        metered = 0
        for job in running:
            if job.hold is None or job.started_at is None or job.accelerator_type is None:
                continue
            cost = run_cost(job.resources.total_devices, job.resources.device_milli, job.started_at, now,
                            job.price_fen_per_device_hour or 0)
            with self.db.begin() as s:
                if job_store.get_job(s, job.id) != job:
                    continue  # it moved on; the next pass sees it fresh
                charged = meter_run(s, org_id=self._org_id(s, job), job_id=job.id, run=job.restart_count, seq=job.meter_seq + 1,
                                hold=bill_from_json(job.hold), charged=bill_from_json(job.run_charged), cost=cost, now=now)
                job_store.set_bill(s, job.id, run_charged=bill_to_json(charged), meter_seq=job.meter_seq + 1)
            metered += 1
        return metered

    def fail_launch(self, job: Job, reason: str) -> None:
        """The launcher refused the job outright: end it FAILED and free its devices."""
        now = self.clock.now()
        with self.db.begin() as s:
            self._close_run(s, job, None, now, now, center_fault=True)
            self._step(s, job, S.STARTING, S.FAILED, reason, now, ended_at=now)
            job_store.release(s, job.id)
        self.launcher.release(job.id, len(job.placements))

    def _engine_lost(self, servers: set[str], now: datetime) -> None:
        """The engine_lost event on each of these servers (newly found down)."""
        if not servers:
            return
        with self.db.begin() as s:
            for row in node_store.node_rows(s):
                if row.name in servers:
                    node_store.add_event(s, row.id, "engine_lost", ENGINE_LOST, now)

    def _lost(self, job: Job, st: RunnerState, now: datetime) -> None:
        if isinstance(self.launcher, NodeWatch):  # the node may have died since the sweep
            down = self.launcher.servers_down({p.node for p in job.placements})
            if down:
                self._engine_lost(down - self.down, now)  # found here before the sweep saw it
                self.down |= down
                self.node_lost(job, ", ".join(sorted(down)), now, cause="its Ray node died")
                return
        billed = "not charged" if self.refund_center_faults else "charged for the time it ran"
        with self.db.begin() as s:
            cost: dict[str, Any] = {}
            if job.status is not S.STARTING:  # STARTING settles in _requeue
                charged, subsidy = self._close_run(s, job, job.started_at, now, now, center_fault=True)
                if charged:  # only when center faults are billed (`refund_center_faults` off)
                    cost = {"cost_fen": (job.cost_fen or 0) + charged, "subsidy_fen": (job.subsidy_fen or 0) + subsidy}
            if job.status is S.STARTING:
                self._requeue(s, job, f"runner not found on Ray ({st.error})", now)
            elif job.status is S.CANCELLING:
                self._step(s, job, S.CANCELLING, S.CANCELLED, f"runner gone after cancel ({st.error})", now, ended_at=now)
                job_store.release(s, job.id)
            elif job.status is S.PREEMPTING:
                to = S.PENDING if job.requeue else S.PREEMPTED
                extra = dict(accelerator_type=None, price_fen_per_device_hour=None, scheduled_at=None, started_at=None,
                             restart_count=job.restart_count + 1) if to is S.PENDING else dict(ended_at=now)
                self._step(s, job, S.PREEMPTING, to, f"runner gone while preempting ({st.error}); {billed}", now,
                           stop_by=None, **extra, **cost)
                job_store.release(s, job.id)
                if to is S.PENDING:
                    job_store.clear_placements(s, job.id)
            else:
                self._step(s, job, S.RUNNING, S.FAILED, f"runner lost: {st.error}; {billed}", now, ended_at=now, **cost)
                job_store.release(s, job.id)
        self.launcher.release(job.id, len(job.placements))

    def sweep_nodes(self, now: datetime, not_ready_after_s: float, lost_after_s: float) -> list[int]:
        """Servers that stopped beating: READY → NOT_READY after `not_ready_after_s` (an event,
        nothing else: running jobs may still be fine); after `lost_after_s` (> 0) the server
        is LOST and each job holding devices on it is ended or requeued (`node_lost`).
        Returns the ids of the jobs taken off lost servers."""
        lost: dict[int, str] = {}
        with self.db.begin() as s:
            for row in node_store.silent_nodes(s, now, not_ready_after_s):
                silent = "never sent a heartbeat" if row.last_heartbeat_at is None else \
                    f"no heartbeat for {(now - row.last_heartbeat_at).total_seconds():.0f}s"
                gone = lost_after_s > 0 and node_store.heartbeat_stale(row.last_heartbeat_at, now, lost_after_s)
                if row.status == node_store.READY and node_store.set_status_if(s, row, node_store.READY, node_store.NOT_READY):
                    node_store.add_event(s, row.id, "not_ready", f"{silent}: no new work placed on it", now)
                    row.status = node_store.NOT_READY
                if gone:
                    lost[row.id] = row.name
                    if row.status == node_store.NOT_READY and node_store.set_status_if(s, row, node_store.NOT_READY, node_store.LOST):
                        node_store.add_event(s, row.id, "lost", f"{silent}: lost; its jobs are requeued or ended", now)
            victims = node_store.jobs_on_nodes(s, list(lost))
            jobs = {j.id: j for j in job_store.jobs_in(s, list(ACTIVE)) if j.id in victims} if victims else {}
        ended = []
        for job in jobs.values():
            where = ", ".join(sorted({p.node for p in job.placements} & set(lost.values()))) or "its server"
            try:
                self.node_lost(job, where, now)
                ended.append(job.id)
            except Stale:
                log.info("job %s changed while its server was being declared lost; retrying next cycle", job.id)
        return ended

    def node_lost(self, job: Job, node: str, now: datetime, cause: str = "no heartbeats") -> None:
        """End the run of a job whose server is lost, as the center's fault (not charged while
        `refund_center_faults`): requeued keeping its age when its spec allows it, else
        NODE_LOST; claims released in the same transaction, every rank's runner killed after it."""
        why = f"server {node} lost ({cause})"
        billed = "not charged" if self.refund_center_faults else "charged for the time it ran"
        with self.db.begin() as s:
            if job.status is S.STARTING:
                self._requeue(s, job, why, now)
            else:
                charged, subsidy = self._close_run(s, job, job.started_at, now, now, center_fault=True)
                cost = {"cost_fen": (job.cost_fen or 0) + charged, "subsidy_fen": (job.subsidy_fen or 0) + subsidy} \
                    if charged else {}
                if job.status is S.CANCELLING:
                    self._step(s, job, S.CANCELLING, S.CANCELLED, f"{why} while cancelling; {billed}", now,
                               ended_at=now, **cost)
                elif job.requeue:
                    self._step(s, job, job.status, S.PENDING, f"requeued: {why}; {billed}; keeps its place by submit time",
                               now, accelerator_type=None, price_fen_per_device_hour=None, scheduled_at=None,
                               started_at=None, stop_by=None, restart_count=job.restart_count + 1, **cost)
                    job_store.clear_placements(s, job.id)
                else:
                    self._step(s, job, job.status, S.NODE_LOST, f"{why}; not requeued as the job asked; {billed}", now,
                               ended_at=now, stop_by=None, **cost)
                job_store.release(s, job.id)
        self.launcher.release(job.id, len(job.placements))

    @staticmethod
    def _step(s: Any, job: Job, frm: JobStatus, to: JobStatus, reason: str, now: datetime, **fields: Any) -> None:
        """One guarded change from the state `job` was read in."""
        assert frm is job.status, (frm, job.status)
        if not job_store.apply_transition(s, job.id, job.version, frm, to, reason, now, **fields):
            raise Stale(job.id)

    @staticmethod
    def _org_id(s: Any, job: Job) -> int:
        org_id = job_store.job_org_id(s, job.id)
        assert org_id is not None
        return org_id
