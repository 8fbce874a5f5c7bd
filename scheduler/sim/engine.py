"""Discrete-event replay of a workload through a policy — the same `decide(snapshot, now)`
the live scheduler calls. Live and simulated runs differ only by what is injected: here a
`FakeClock` (simulated seconds) and a `SimLauncher` (devices are taken and given back in
memory; a job "runs" for its true duration, or until its time limit, which is all the
policy ever sees).

Invariants (tested):
- A device (or device share) is never held by two jobs; busy time never exceeds capacity.
- Every job ends exactly once (SUCCEEDED, TIMEOUT, PREEMPTED…) or is still pending/dropped
  at the end of the run; a preempted job goes back to the queue keeping its submit time.
- Decisions are taken after each batch of simultaneous events (arrivals, ends), so a run is
  deterministic for a given input.

Two modes:
- `time`: jobs arrive at their submit times and leave when they end.
- `fgd`: the FGD paper's protocol — jobs arrive one by one and never leave; a job that does
  not fit at once is dropped; the GPU allocation ratio is recorded against the arrived load.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from quota.usage import Accumulator
from scheduler.policy import capacity, fragment, pairing, scarcity
from scheduler.sim.model import SimCluster, SimJob
from scheduler.types import (
    DEFAULT_CLASSES,
    Decisions,
    JobRequest,
    NodeView,
    Placement,
    PolicyConfig,
    Resources,
    RunningJob,
    ShareNode,
    Snapshot,
    project_key,
)

Policy = Callable[[Snapshot, float], Decisions]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """Simulated time: seconds since the trace start, as the `Clock` protocol's datetime."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)


@dataclass
class _Server:
    name: str
    type: str
    device_count: int
    free: list[int]
    shared: dict[int, int]  # device -> free thousandths
    cpu: int
    mem: int
    rack: str | None


@dataclass
class JobRecord:
    """What happened to one job (the simulator's output)."""

    job: SimJob
    status: str = "PENDING"
    start: float | None = None  # of the last run
    first_start: float | None = None
    end: float | None = None
    accelerator_type: str | None = None
    preemptions: int = 0
    busy_device_s: float = 0.0  # device-seconds held, all runs


class SimLauncher:
    """Applies decisions to the in-memory cluster: the simulated counterpart of RayLauncher."""

    def __init__(self, cluster: SimCluster) -> None:
        self.servers = {
            s.name: _Server(s.name, s.accelerator_type, s.devices, list(range(s.devices)), {}, s.cpu_milli, s.memory_mib, s.rack)
            for s in cluster.servers
        }
        self.total_milli = 1000 * sum(s.devices for s in cluster.servers)
        self.allocated_milli = 0

    def take(self, job: SimJob, placements: tuple[Placement, ...], milli: int) -> None:
        """Hold the devices (or device shares), CPUs and memory of a start. Raises if the
        policy gave anything that is not free: the invariant the simulation checks."""
        for p in placements:
            s = self.servers[p.node]
            for d in p.devices:
                if milli >= 1000:
                    s.free.remove(d)
                    continue
                if d in s.shared:
                    left = s.shared[d]
                else:
                    s.free.remove(d)
                    left = 1000
                if left < milli:
                    raise AssertionError(f"device {p.node}/{d} over-shared")
                s.shared[d] = left - milli
            s.cpu -= job.cpu_milli
            s.mem -= job.memory_mib
            if s.cpu < 0 or s.mem < 0:
                raise AssertionError(f"server {p.node} over-committed")
            self.allocated_milli += len(p.devices) * milli

    def give_back(self, job: SimJob, placements: tuple[Placement, ...], milli: int) -> None:
        for p in placements:
            s = self.servers[p.node]
            for d in p.devices:
                if milli >= 1000:
                    s.free.append(d)
                    s.free.sort()
                else:
                    got = s.shared.pop(d, 0) + milli
                    if got >= 1000:
                        s.free.append(d)
                        s.free.sort()
                    else:
                        s.shared[d] = got
            s.cpu += job.cpu_milli
            s.mem += job.memory_mib
            self.allocated_milli -= len(p.devices) * milli

    def views(self) -> tuple[NodeView, ...]:
        out = []
        for s in self.servers.values():
            shared = tuple(sorted((d, m) for d, m in s.shared.items() if m > 0))
            out.append(NodeView(s.name, s.type, s.device_count, tuple(s.free), s.cpu, s.mem, True, s.rack, shared))
        return tuple(out)


@dataclass
class _Running:
    job: SimJob
    type: str
    placements: tuple[Placement, ...]
    start: float
    limit: float
    ends: float  # when it leaves by itself (duration or time limit)
    stop_by: float | None = None
    epoch: int = 0


@dataclass
class SimResult:
    records: dict[int, JobRecord]
    makespan: float
    # (t, queue length, busy devices, busy devices by tenant), at most every `sample_every` s
    samples: list[tuple[float, int, float, dict[str, float]]] = field(default_factory=list)
    allocation_curve: list[tuple[float, float]] = field(default_factory=list)  # (arrived %, allocated %)
    decisions: int = 0
    dropped: int = 0
    total_devices: int = 0
    # Fairness under contention: the time-weighted mean, over periods with jobs waiting, of
    # Jain's index of (share of busy devices / entitlement among the tenants with work).
    contended_jain: float | None = None


class Simulator:
    """One replay. What the policy sees is kept up to date incrementally (the capacity
    index, the per-shape server counts of the scarcity penalty, the running and pending
    jobs as the policy's types, the live part of usage), so
    a decision costs what changed, not the size of the cluster."""

    def __init__(self, cluster: SimCluster, policy: Policy, time_limit: Callable[[SimJob], float],
                 workload: Any | None = None, tie_rank: dict[str, int] | None = None) -> None:
        self.workload = workload  # target workload for score-based placement (policy.fragment.Workload)
        self.tie_rank = tie_rank  # how equal placement scores are broken (server -> rank)
        self.cluster = cluster
        self.policy = policy
        self.time_limit = time_limit
        self.clock = FakeClock()
        self.launcher = SimLauncher(cluster)
        self.caps = capacity.build(self.launcher.views())
        # Per GPU shape of the workload, the servers where it fits (the scarcity penalty's
        # C_m), kept with `caps`: every start and end marks its servers for a recount.
        self.shape_fits = scarcity.LiveShapeFits(workload, self.caps) if isinstance(workload, fragment.Workload) else None
        # The servers as numpy columns for score-based placement, kept the same way.
        self.columns: fragment.ServerColumns | None = fragment.ServerColumns(self.caps, tie_rank)
        self.device_shares: pairing.DeviceShares | None = pairing.DeviceShares()  # the shares each device holds
        self.types = sorted({s.accelerator_type for s in cluster.servers})
        self.pool_of = {t.org: t.pool for t in cluster.tenants}
        self.classes = cluster.classes or dict(DEFAULT_CLASSES)
        self.usage: dict[str, Accumulator] = {}
        self.running: dict[int, _Running] = {}
        self.pending: dict[int, SimJob] = {}
        self.records: dict[int, JobRecord] = {}
        self._requests: dict[int, JobRequest] = {}
        self._running_views: dict[int, RunningJob] = {}
        # Per tenant, for the decayed usage of running jobs in closed form:
        # sum_j u_j * H/ln2 * (1 - 2^-(t - s_j)/H) = H/ln2 * (U - 2^(-t/H) * V),
        # U = sum_j u_j, V = sum_j u_j * 2^(s_j/H) (s_j in units of H stays small).
        self._token = 0
        self._org_use: dict[tuple[str, str], int] = defaultdict(int)
        self._pool_use: dict[tuple[str, str], int] = defaultdict(int)
        self._live_u: dict[str, float] = defaultdict(float)
        self._live_v: dict[str, float] = defaultdict(float)
        self._busy: dict[str, float] = defaultdict(float)  # devices held, by tenant

    # ------------------------------------------------------------------ snapshot
    def _request(self, job: SimJob) -> JobRequest:
        req = self._requests.get(job.id)
        if req is None:
            r = Resources(job.accelerators or tuple(self.types), job.devices, job.nodes, job.cpu_milli, job.memory_mib,
                          job.device_milli)
            req = self._requests[job.id] = JobRequest(job.id, job.tenant, r, job.submit_time, int(math.ceil(self.time_limit(job))),
                                                      "default", self._pool(job), job.priority_class)
        return req

    def _pool(self, job: SimJob) -> str:
        return job.pool or self.pool_of.get(job.tenant, "default")

    def snapshot(self, t: float, config: PolicyConfig | None = None) -> Snapshot:
        return Snapshot(
            nodes=(),
            pending=tuple(self._request(j) for j in self.pending.values()),
            running=tuple(self._running_views.values()),
            share_tree=self._tree(t),
            quotas=self.cluster.quotas,
            pool_quotas=self.cluster.pool_quotas,
            classes=self.classes,
            prices=self.cluster.prices,
            funds=None,
            config=self.cluster.policy if config is None else config,
            capacity=self.caps,
            in_use=(self._org_use, self._pool_use),
            workload=self.workload,
            tie_rank=self.tie_rank,
            shape_fits=self.shape_fits,
            columns=self.columns,
            device_shares=self.device_shares,
        )

    def _units(self, r: _Running) -> float:
        devices = sum(len(p.devices) for p in r.placements) * r.job.device_milli / 1000
        return devices * self.cluster.billing_weights.get(r.type, 1.0)

    def _tree(self, t: float) -> tuple[ShareNode, ...]:
        tenants = {tn.org: tn for tn in self.cluster.tenants}
        orgs = set(tenants) | set(self.usage) | set(self._live_u) | {j.tenant for j in self.pending.values()}
        if not orgs:
            return ()
        hl = self.cluster.half_life_s
        scale = hl / math.log(2)
        decay_now = 2.0 ** (-t / hl)
        pools = sorted({tenants[o].pool if o in tenants else self.pool_of.get(o, "default") for o in orgs})
        nodes = [ShareNode("center", None, 1.0)]
        nodes += [ShareNode(f"pool:{p}", "center", float(self.cluster.pool_shares.get(p, 1.0))) for p in pools]
        for o in sorted(orgs):
            tn = tenants.get(o)
            nodes.append(ShareNode(f"org:{o}", f"pool:{tn.pool if tn else self.pool_of.get(o, 'default')}", tn.shares if tn else 1.0))
            acc = self.usage.get(o)
            live = max(0.0, scale * (self._live_u[o] - decay_now * self._live_v[o]))
            nodes.append(ShareNode(project_key(o, "default"), f"org:{o}", 1.0, (acc.at(max(t, acc.as_of)) if acc else 0.0) + live))
        return tuple(nodes)

    def _contended_jain(self) -> float | None:
        """Jain's index of busy-device share / entitlement over the tenants that have work
        (running or waiting) right now; entitlement = pool share among the active pools ×
        org share among the pool's active orgs."""
        active = {o for o, b in self._busy.items() if b > 1e-9} | {j.tenant for j in self.pending.values()}
        total = sum(self._busy.values())
        if len(active) < 2 or total <= 0:
            return None
        tenants = {tn.org: tn for tn in self.cluster.tenants}
        pool = {o: (tenants[o].pool if o in tenants else self.pool_of.get(o, "default")) for o in active}
        shares = {o: (tenants[o].shares if o in tenants else 1.0) for o in active}
        pools = set(pool.values())
        pool_total = sum(self.cluster.pool_shares.get(p, 1.0) for p in pools)
        ratios = []
        for o in active:
            siblings = sum(shares[x] for x in active if pool[x] == pool[o])
            ent = self.cluster.pool_shares.get(pool[o], 1.0) / pool_total * shares[o] / siblings
            ratios.append(self._busy.get(o, 0.0) / total / ent)
        sq = sum(r * r for r in ratios)
        return sum(ratios) ** 2 / (len(ratios) * sq) if sq > 0 else None

    def _start(self, job: SimJob, type_: str, placements: tuple[Placement, ...], milli: int, t: float) -> _Running:
        self.launcher.take(job, placements, milli)  # the independent check: raises on a double allocation
        self.caps[type_].take(placements, self._request(job).resources)
        for p in placements:
            if self.columns is not None:
                self.columns.changed(p.node)
            if self.shape_fits is not None:
                self.shape_fits.changed(type_, p.node)
            if self.device_shares is not None and job.device_milli < 1000:
                for d in p.devices:
                    self.device_shares.add(p.node, d, job.device_milli)
        limit = float(self.time_limit(job))
        self._token += 1  # end events carry it: an event of an earlier run of the job is stale
        r = _Running(job, type_, placements, t, limit, t + min(job.duration_s, limit), epoch=self._token)
        self.running[job.id] = r
        self._running_views[job.id] = RunningJob(job.id, job.tenant, type_, placements, t, int(math.ceil(limit)), job.submit_time,
                                                 "default", self._pool(job), job.priority_class, job.device_milli, 0.0)
        milli = sum(len(p.devices) for p in placements) * job.device_milli
        self._busy[job.tenant] += milli / 1000
        self._org_use[(job.tenant, type_)] += milli
        self._pool_use[(self._pool(job), type_)] += milli
        u = self._units(r)
        self._live_u[job.tenant] += u
        self._live_v[job.tenant] += u * 2.0 ** (t / self.cluster.half_life_s)
        return r

    def _release(self, r: _Running) -> None:
        del self.running[r.job.id]
        del self._running_views[r.job.id]
        self.launcher.give_back(r.job, r.placements, r.job.device_milli)
        for p in r.placements:
            self.caps[r.type].give_back(p.node, p.devices, r.job.device_milli, r.job.cpu_milli, r.job.memory_mib)
            if self.columns is not None:
                self.columns.changed(p.node)
            if self.shape_fits is not None:
                self.shape_fits.changed(r.type, p.node)
            if self.device_shares is not None and r.job.device_milli < 1000:
                for d in p.devices:
                    self.device_shares.remove(p.node, d, r.job.device_milli)
        milli = sum(len(p.devices) for p in r.placements) * r.job.device_milli
        self._busy[r.job.tenant] -= milli / 1000
        self._org_use[(r.job.tenant, r.type)] -= milli
        self._pool_use[(self._pool(r.job), r.type)] -= milli
        u = self._units(r)
        self._live_u[r.job.tenant] -= u
        self._live_v[r.job.tenant] -= u * 2.0 ** (r.start / self.cluster.half_life_s)

    # ------------------------------------------------------------------ time mode
    def run(self, jobs: Iterable[SimJob], sample_every: float | None = None,
            progress: Callable[[int], None] | None = None, cycle_s: float = 0.0) -> SimResult:
        """Replay in time order. With `cycle_s` > 0 the policy decides at multiples of it (as
        the live loop cycles), on everything that happened since; with 0, after every batch
        of simultaneous events. `sample_every` (default: 1/300 of the submission span) spaces
        the queue/utilization samples."""
        events: list[tuple[float, int, int, int, int]] = []  # (t, order, seq, job id, epoch); order: ends before arrivals
        seq = 0
        ordered = sorted(jobs, key=lambda j: (j.submit_time, j.id))
        if sample_every is None:
            sample_every = (ordered[-1].submit_time - ordered[0].submit_time) / 300 if ordered else 0.0
        for j in ordered:
            self.records[j.id] = JobRecord(j)
            heapq.heappush(events, (j.submit_time, 1, seq, j.id, 0))
            seq += 1
        result = SimResult(self.records, 0.0, total_devices=self.cluster.total_devices)
        next_sample = 0.0
        done = 0
        fair_sum = fair_time = 0.0
        last: tuple[float, float] | None = None  # (time, jain) of the last contended decision
        while events:
            t = events[0][0]
            if cycle_s > 0:  # the next scheduling cycle at or after the first event
                t = math.ceil(t / cycle_s - 1e-9) * cycle_s
            self.clock.t = t
            while events and events[0][0] <= t:
                at, kind, _, job_id, epoch = heapq.heappop(events)
                if kind == 1:
                    self.pending[job_id] = self.records[job_id].job
                else:
                    done += self._end(job_id, epoch, at)
            if progress:
                progress(done)
            if t >= next_sample:
                result.samples.append((t, len(self.pending), self.launcher.allocated_milli / 1000,
                                       {k: v for k, v in self._busy.items() if v > 1e-9}))
                next_sample = t + sample_every
            if last is not None:
                fair_sum += last[1] * (t - last[0])
                fair_time += t - last[0]
                last = None
            if not self.pending:
                continue
            j = self._contended_jain()
            if j is not None:
                last = (t, j)
            d = self.policy(self.snapshot(t), t)
            result.decisions += 1
            for p in d.preemptions:
                r = self.running[p.job_id]
                r.stop_by = t  # a simulated process stops at once on its signal
                self._token += 1
                r.epoch = self._token
                self._running_views[p.job_id] = replace(self._running_views[p.job_id], stop_by=t)
                heapq.heappush(events, (t, 0, seq, p.job_id, r.epoch))
                seq += 1
            for s in d.starts:
                job = self.pending.pop(s.job_id)
                r = self._start(job, s.accelerator_type, s.placements, s.device_milli, t)
                rec = self.records[job.id]
                rec.status, rec.start, rec.accelerator_type = "RUNNING", t, s.accelerator_type
                rec.first_start = t if rec.first_start is None else rec.first_start
                heapq.heappush(events, (r.ends, 0, seq, job.id, r.epoch))
                seq += 1
        result.makespan = self.clock.t
        result.contended_jain = fair_sum / fair_time if fair_time > 0 else None
        for job_id in self.pending:
            self.records[job_id].status = "PENDING"
        return result

    def _end(self, job_id: int, epoch: int, t: float) -> int:
        r = self.running.get(job_id)
        if r is None or r.epoch != epoch:
            return 0  # a stale end event (the job was preempted meanwhile)
        self._release(r)
        rec = self.records[job_id]
        devices = sum(len(p.devices) for p in r.placements) * r.job.device_milli / 1000
        rec.busy_device_s += devices * (t - r.start)
        w = self.cluster.billing_weights.get(r.type, 1.0)
        hl = self.cluster.half_life_s
        amount = devices * w * hl / math.log(2) * -math.expm1(-(t - r.start) * math.log(2) / hl) if t > r.start else 0.0
        acc = self.usage.get(r.job.tenant)
        self.usage[r.job.tenant] = (acc or Accumulator(0.0, t, hl)).add(amount, t)
        if r.stop_by is not None:  # preempted: back to the queue with its submit time
            rec.preemptions += 1
            rec.status = "PENDING"
            self.pending[job_id] = r.job
            return 0
        rec.status = "SUCCEEDED" if r.job.duration_s <= r.limit else "TIMEOUT"
        rec.end = t
        return 1

    # ------------------------------------------------------------------ fgd mode
    def run_fgd(self, arrivals: Iterable[SimJob]) -> SimResult:
        """Arrivals only, no departures; a job that cannot start at once is dropped. So the
        policy decides without reservations or start estimates for blocked jobs: each decision
        holds one job, a reservation could only be for it and is never used, and the starts
        are the same (tests/unit/test_sim_engine.py); building them walked every running job."""
        total = self.cluster.total_devices
        cfg = replace(self.cluster.policy, backfill_depth=0, estimate_depth=0)
        result = SimResult(self.records, 0.0, total_devices=total)
        arrived = 0.0
        next_mark = 0
        for job in arrivals:
            self.records[job.id] = JobRecord(job)
            arrived += job.gpu_request
            self.pending = {job.id: job}
            d = self.policy(self.snapshot(0.0, cfg), 0.0)
            result.decisions += 1
            if d.starts:
                s = d.starts[0]
                self._start(job, s.accelerator_type, s.placements, s.device_milli, 0.0)
                self.records[job.id].status, self.records[job.id].start = "RUNNING", 0.0
                self.records[job.id].accelerator_type = s.accelerator_type
            else:
                self.records[job.id].status = "DROPPED"
                result.dropped += 1
            while next_mark <= 100 * arrived / total and next_mark <= 1000:
                result.allocation_curve.append((float(next_mark), 100 * self.launcher.allocated_milli / 1000 / total))
                next_mark += 1
        self.pending = {}
        return result
