"""The suanli policy: `decide(snapshot, now)` — fair share, guarantees with borrowing and
reclaim, limits, funds, gang, EASY backfill, fragmentation-aware placement.

Order. Pending jobs are taken in two tiers, and by priority within each:
  tier 0 — jobs that fit inside their org's (or their pool's) guarantee on some accepted
           type (guarantees
           are promises: they are served before borrowing, as Kueue admits nominal quota
           first); tier 1 — everything else.
Priority is the multifactor sum of `priority.py` (Fair Tree fair share, age, size, QOS);
ties go to the earlier submission, then the lower id.

Jobs of an org that is suspended or not verified (`snapshot.inactive_orgs`) wait with
`org_not_active` before anything else: they start nothing, reserve nothing, reclaim nothing.

For each job, in that order:
1. Types it accepts that have servers; a type is dropped if the org or its pool would go
   over its limit there (`over_quota`), or if the org's spendable funds cannot cover the
   hold `time limit × devices × price` (`insufficient_funds`); `never_fits` if no server
   could ever hold it.
2. Placement now, refusing what would delay a reservation (`backfill.py`): with the target
   workload in the snapshot, one-server jobs go where fragmentation grows least (FGD,
   `scoring.py`) less a scarcity penalty (placement "auto", this policy's default; the
   `fgd` baseline, placement "fgd", is the paper's FGD without it): placing there costs
   100 · λ · Σ p_m / C_m over the workload shapes m that would stop fitting on that server,
   C_m = servers of every type where m fits now (counted on first need in a decision, kept
   up to date by each start of the decision; or kept across decisions by the producer,
   `Snapshot.shape_fits`, with the same counts), λ = `scoring.SCARCITY_WEIGHT` = 20, the best
   of 1–2000 on the Alibaba trace (below it FGD's choice barely changes, above it the
   penalty overrides FGD's packing). So the last servers a rare shape fits on are kept for
   it. A GPU share joins a partly used device only where the workload's share plan allows
   (`pairing.py`: the shares on the device can still complete a pattern of an optimal
   packing), unless no device is left then. Over every accepted type; otherwise best fit
   by free devices, one rack for gangs, fractional packing (`capacity.py`). If several types can start it now, the
   cheapest for its org wins (then its preference order). Gangs get all their servers in
   the same decision or none. The start's reason names the placement that chose it. (The
   workload comes from the simulator's trace, or live from the jobs submitted lately:
   `suanli.db.store.snapshot.recent_workload`.)
3. Otherwise, if it may reclaim its guarantee (`reclaim.py`), the policy preempts the
   fewest borrowing jobs of other orgs needed and reserves the freed servers for it.
4. Otherwise the first `backfill_depth` blocked jobs per type get a reservation (EASY);
   up to `estimate_depth` blocked jobs get an estimated start time.

Invariants (tested): no device is over-allocated; a gang job gets all its servers or none;
a job starts only on a type it accepts; no org or pool exceeds its limit; funds are never
over-committed; victims are borrowing jobs of other orgs; the result depends only on
(snapshot, now).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from quota.ledger import hold_fen
from quota.types import Split, VoucherBalance
from quota.vouchers import hold_split
from scheduler.policy import capacity, fragment, pairing, scarcity, scoring
from scheduler.policy.backfill import Estimator, Reservation, Timeline
from scheduler.policy.fairshare import classic, fair_tree
from scheduler.policy.priority import job_priority
from scheduler.policy.reclaim import borrowing, find_victims
from scheduler.types import (
    Decisions,
    JobRequest,
    Preempt,
    Priority,
    Placement,
    Quota,
    Resources,
    Snapshot,
    Start,
    Wait,
    WaitCode,
    project_key,
)

ROOT = "center"
_NO_DEVICE = Resources((), 0)  # TypeCapacity.servers_for returns every server for it
# How a start's placement was chosen, for its reason (`suanli describe`).
PLACED_BY = {"bucket": "best fit", "fgd": "least fragmentation growth (FGD)"}


def job_hold(job: JobRequest, price_fen_per_hour: int) -> int:
    """What a job could cost at most: its time limit × devices × price, rounded up."""
    return hold_fen(job.resources.total_milli, job.time_limit_s, price_fen_per_hour)


class _State:
    """Mutable bookkeeping of one decision. What only blocked jobs need (the timelines of
    device releases, who is borrowing, victims' ranks) is built on first use, so a cycle
    in which every job fits costs O(pending + servers touched)."""

    def __init__(self, snap: Snapshot, now: float, caps: dict[str, capacity.TypeCapacity]) -> None:
        self.snap, self.now, self.caps = snap, now, caps
        self.org_use: dict[tuple[str, str], int] = defaultdict(int)  # (org, type) -> thousandths in use
        self.pool_use: dict[tuple[str, str], int] = defaultdict(int)
        if snap.in_use is not None:
            self.org_use.update(snap.in_use[0])
            self.pool_use.update(snap.in_use[1])
        else:
            for j in snap.running:
                m = j.milli
                self.org_use[(j.org, j.accelerator_type)] += m
                self.pool_use[(j.pool, j.accelerator_type)] += m
        # What each org can still pay new holds with: account (with credit) and vouchers.
        self.wallets: dict[str, tuple[int, list[VoucherBalance]]] | None = None
        if snap.wallets is not None:
            self.wallets = {o: (w.cash_available_fen, list(w.vouchers)) for o, w in snap.wallets.items()}
        elif snap.funds is not None:
            self.wallets = {o: (f, []) for o, f in snap.funds.items()}
        self.at = datetime.fromtimestamp(now, UTC)  # for vouchers' validity windows
        self.reservations: dict[str, list[Reservation]] = defaultdict(list)
        self.estimators: dict[str, Estimator] = {}
        self._stopping: set[int] | None = None
        self._timelines: dict[str, Timeline] | None = None
        self._started: list[tuple[str, float, str, int]] = []  # (type, end, node, devices) of this cycle's starts
        self._borrowers: set[int] | None = None
        self._rank: dict[int, float] | None = None
        self._fits: scarcity.ShapeFits | None = None
        self._columns: fragment.ServerColumns | None = None
        self._changed: list[str] = []  # servers started on before the columns were made
        self._contents: pairing.DeviceShares | None = None  # the shares each device holds
        # The producer's counts (Snapshot.shape_fits), if they describe this capacity and
        # workload and the scarcity penalty may need them (placement "auto").
        live = snap.shape_fits
        self._live = live if (live is not None and snap.capacity is not None and snap.workload is not None
                              and getattr(live, "workload", None) is snap.workload
                              and snap.config.placement == "auto") else None

    @property
    def timelines(self) -> dict[str, Timeline]:
        if self._timelines is None:
            events: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
            for j in self.snap.running:
                whole = j.device_milli >= 1000
                for p in j.placements:
                    if whole and p.devices:
                        events[j.accelerator_type].append((j.ends_by, p.node, len(p.devices)))
            for t, end, node, k in self._started:
                events[t].append((end, node, k))
            self._timelines = defaultdict(Timeline, {t: Timeline(sorted(ev)) for t, ev in events.items()})
        return self._timelines

    @property
    def stopping(self) -> set[int]:
        """Running jobs already being stopped, and victims chosen in this decision."""
        if self._stopping is None:
            self._stopping = {j.id for j in self.snap.running if j.stop_by is not None}
        return self._stopping

    @property
    def borrowers(self) -> set[int]:
        if self._borrowers is None:
            self._borrowers = borrowing(self.snap.running, self.snap.quotas, self.snap.pool_quotas)
        return self._borrowers

    @property
    def rank(self) -> dict[int, float]:
        """Running jobs rank by their class, for the choice of victims."""
        if self._rank is None:
            classes = self.snap.classes
            self._rank = {j.id: classes.get(j.priority_class, classes["normal"]).value for j in self.snap.running}
        return self._rank

    def shape_fits(self) -> np.ndarray:
        """C_m of the scarcity penalty: per GPU shape of the workload, the servers of every
        type where it fits now; counted on first use, then kept up to date by `commit`."""
        if self._fits is None:
            assert self.snap.workload is not None
            if self._live is not None:  # kept by the producer: only its changed servers are recounted
                self._fits = scarcity.ShapeFits.from_counts(self.snap.workload, self._live.counts())
            else:
                every = {t: c.servers_for(_NO_DEVICE) for t, c in self.caps.items()}  # all servers, fast on a fork
                self._fits = scarcity.ShapeFits(self.snap.workload, every)
        return self._fits.counts

    def columns(self, W=None) -> fragment.ServerColumns:  # type: ignore[no-untyped-def]
        """Every server as numpy columns for score-based placement (with FGD's tables for the
        compiled workload W), on first use in this decision: a copy of the producer's
        (`Snapshot.columns`) with this decision's starts so far applied, or built afresh;
        then `commit` tells them which servers each start changed."""
        if self._columns is None:
            live = self.snap.columns
            if (live is not None and self.snap.capacity is not None and live.capacity is self.snap.capacity
                    and live.rank is self.snap.tie_rank):
                self._columns = live.fork(self.caps, W)
                for name in self._changed:
                    self._columns.changed(name)
            else:
                self._columns = fragment.ServerColumns(self.caps, self.snap.tie_rank)
            self._changed = []
        return self._columns

    def share_ok(self, milli: int):  # type: ignore[no-untyped-def]
        """(server, device) -> may a share of `milli` join that partly used device, by the
        workload's share plan (`pairing.py`); None if the workload has no share sizes."""
        assert self.snap.workload is not None
        plan = pairing.share_plan(self.snap.workload)
        if not plan.active:
            return None
        if self._contents is None:  # the producer's, or read from the running jobs; `commit` adds this decision's
            kept = self.snap.device_shares
            self._contents = (kept if kept is not None else pairing.DeviceShares.of(self.snap.running)).fork()
        held = self._contents.get
        return lambda node, device: plan.allows(held(node, device), milli)

    def guarantee_room(self, job: JobRequest, t: str) -> bool:
        """Whether the job fits inside its org's guarantee, or its pool's, on type t."""
        m = job.resources.total_milli
        g = self.snap.quotas.get((job.org, t), Quota()).guaranteed * 1000
        if g > 0 and self.org_use[(job.org, t)] + m <= g:
            return True
        pg = self.snap.pool_quotas.get((job.pool, t), Quota()).guaranteed * 1000
        return pg > 0 and self.pool_use[(job.pool, t)] + m <= pg

    def over_limit(self, job: JobRequest, t: str) -> str | None:
        m = job.resources.total_milli
        q = self.snap.quotas.get((job.org, t))
        if q and q.limit is not None and self.org_use[(job.org, t)] + m > q.limit * 1000:
            return f"org {job.org} at {self.org_use[(job.org, t)] / 1000:g}/{q.limit} {t} (limit)"
        pq = self.snap.pool_quotas.get((job.pool, t))
        if pq and pq.limit is not None and self.pool_use[(job.pool, t)] + m > pq.limit * 1000:
            return f"pool {job.pool} at {self.pool_use[(job.pool, t)] / 1000:g}/{pq.limit} {t} (limit)"
        return None

    def hold(self, job: JobRequest, t: str, price: int) -> Split:
        """How the org would pay the job's hold on type t: vouchers first, then the account."""
        _, vouchers = (self.wallets or {}).get(job.org, (0, []))
        return hold_split(job_hold(job, price), t, vouchers, self.at)

    def affordable(self, job: JobRequest, t: str, price: int) -> bool:
        if self.wallets is None:
            return True
        cash, _ = self.wallets.get(job.org, (0, []))
        return self.hold(job, t, price).cash_fen <= cash

    def veto(self, t: str, ends_at: float):  # type: ignore[no-untyped-def]
        res = self.reservations.get(t)
        if not res:
            return None
        return lambda node, k: any(r.refuses(node, k, ends_at) for r in res)

    def commit(self, job: JobRequest, t: str, placements, price: int) -> None:  # type: ignore[no-untyped-def]
        r = job.resources
        if self._fits is None and self._live is not None:
            # The producer's counts describe the capacity before this decision: take them
            # now and keep them up to date, as a count on first need would see this start.
            self.shape_fits()
        fits = self._fits
        if fits is not None:
            for p in placements:
                fits.remove(self.caps[t].nodes[p.node])
        self.caps[t].take(placements, r)
        for p in placements:
            if self._columns is not None:
                self._columns.changed(p.node)
            else:
                self._changed.append(p.node)
            if r.fractional and self._contents is not None:  # (a share is placed only after `share_ok` read them)
                for d in p.devices:
                    self._contents.add(p.node, d, r.device_milli)
        if fits is not None:
            for p in placements:
                fits.add(self.caps[t].nodes[p.node])
        self.org_use[(job.org, t)] += r.total_milli
        self.pool_use[(job.pool, t)] += r.total_milli
        if self.wallets is not None:
            cash, vouchers = self.wallets.get(job.org, (0, []))
            sp = self.hold(job, t, price)
            left = dict(sp.voucher_parts)
            self.wallets[job.org] = (cash - sp.cash_fen, [replace(b, remaining_fen=b.remaining_fen - left.get(b.voucher.id, 0))
                                                          for b in vouchers])
        ends = self.now + job.time_limit_s
        whole = not r.fractional
        for p in placements:
            k = len(p.devices) if whole else 0
            if self._timelines is None:
                self._started.append((t, ends, p.node, k))
            else:
                self._timelines[t].add(ends, p.node, k)
        for res in self.reservations.get(t, ()):
            res.consume(placements, ends, whole)


def decide(snap: Snapshot, now: float) -> Decisions:
    cfg = snap.config
    caps = {t: c.fork() for t, c in snap.capacity.items()} if snap.capacity is not None else capacity.build(snap.nodes)
    type_devices = {t: c.total_devices for t, c in caps.items()}
    fair_fn = classic if cfg.fairshare == "classic" else fair_tree
    fair = fair_fn(snap.share_tree, ROOT) if snap.share_tree else {}
    st = _State(snap, now, caps)

    ordered = []
    waits: list[Wait] = []
    for job in snap.pending:
        cls = snap.classes.get(job.priority_class)
        if cls is None:
            waits.append(Wait(job.id, WaitCode.UNKNOWN_CLASS, f"unknown priority class {job.priority_class!r}"))
            continue
        if job.org in snap.inactive_orgs:  # no start, no reservation, no reclaim for it
            waits.append(Wait(job.id, WaitCode.ORG_NOT_ACTIVE,
                              f"org {job.org} is {snap.inactive_orgs[job.org]}: its jobs wait until it is verified again"))
            continue
        accepted = sum(type_devices.get(t, 0) for t in job.resources.accelerator_types)
        fs = fair.get(project_key(job.org, job.project))
        prio = job_priority(job, now, fs.factor if fs else 0.5, cls, accepted, cfg)
        tier = 0 if cfg.guarantee_tiers and any(st.guarantee_room(job, t) for t in job.resources.accelerator_types if t in caps) else 1
        key = 0.0 if cfg.ordering == "fifo" else -prio.value
        ordered.append((tier, key, job.submitted_at, job.id, job, prio))
    ordered.sort(key=lambda e: e[:4])

    starts: list[Start] = []
    preempts: list[Preempt] = []
    first = [e for e in ordered if e[0] == 0]
    rest = [e for e in ordered if e[0] == 1]
    for _, key, submitted, job_id, job, prio in first:
        # In this pass a guaranteed job may use only the types where it is inside a
        # guarantee (it must not take a device another org is guaranteed). If its org used
        # up the guarantee earlier in this decision, or it did not start there, it waits
        # for its turn among the borrowing jobs, on every type it accepts.
        room = [t for t in job.resources.accelerator_types if t in caps and st.guarantee_room(job, t)]
        outcome = _one(st, job, prio, True, preempts, room) if room else None
        if outcome is None or (isinstance(outcome, Wait) and outcome.code is not WaitCode.RECLAIMING
                               and set(job.resources.accelerator_types) - set(room)):
            for t in room:  # it will be decided again: no reservation from this attempt
                st.reservations[t] = [res for res in st.reservations[t] if res.job_id != job_id]
            bisect.insort(rest, (1, key, submitted, job_id, job, prio), key=lambda e: e[:4])
            continue
        _record(outcome, starts, waits)
    examined = len(starts) + len(waits)
    for _, _, _, _, job, prio in rest:
        if examined >= cfg.queue_depth:
            waits.append(Wait(job.id, WaitCode.NO_CAPACITY_NOW,
                              f"not examined this cycle: the first {cfg.queue_depth} jobs by priority were", prio))
            continue
        examined += 1
        _record(_one(st, job, prio, not cfg.guarantee_tiers and _may_reclaim(st, job), preempts), starts, waits)
    return Decisions(tuple(starts), tuple(waits), tuple(preempts))


def _record(outcome: Start | Wait, starts: list[Start], waits: list[Wait]) -> None:
    if isinstance(outcome, Start):
        starts.append(outcome)
    else:
        waits.append(outcome)


def _place_scored(st: _State, job: JobRequest, types: list[str], ends: float,
                  strategy: str, scarce: bool = False) -> tuple[str, tuple[Placement, ...]] | None:
    """Score-based placement (`PolicyConfig.placement`, see policy/scoring.py) over every
    server of every accepted type at once, refusing what would delay a reservation; with
    `scarce` (fgd only) less the scarcity penalty, counted over every server of `st.caps`."""
    r = job.resources
    types = [t for t in types if st.caps[t].may_fit(r)]
    if not types:
        return None
    whole = 0 if r.devices_per_node == 0 else (1 if r.fractional else r.devices_per_node)
    vetoes = {t: v for t in types if (v := st.veto(t, ends)) is not None}
    veto = (lambda n: n.type in vetoes and vetoes[n.type](n.name, whole)) if vetoes else None
    seed = (hash((job.id, job.submitted_at)) & 0x7FFFFFFF) if strategy == "random" else 0
    W = st.snap.workload._compiled if strategy == "fgd" and st.snap.workload is not None else None  # type: ignore[attr-defined]
    cols = st.columns(W)
    chosen = scoring.choose_among(strategy, r, cols.arrays(W), st.snap.workload, seed, rank=st.snap.tie_rank,
                                  scarcity=st.shape_fits if scarce else None, veto=veto, rows=cols.rows_of(types),
                                  share_ok=st.share_ok(r.device_milli) if scarce and r.fractional else None)
    if chosen is None:
        return None
    node, devices = chosen
    return node.type, (Placement(node.name, tuple(devices)),)


def _may_reclaim(st: _State, job: JobRequest) -> bool:
    return any(st.guarantee_room(job, t) for t in job.resources.accelerator_types if t in st.caps)


def _one(st: _State, job: JobRequest, prio: Priority, guaranteed: bool, preempts: list[Preempt],
         only: list[str] | None = None) -> Start | Wait:
    snap, r = st.snap, job.resources
    types = [t for t in (only if only is not None else r.accelerator_types) if t in st.caps]
    if not types:
        return Wait(job.id, WaitCode.NEVER_FITS, f"no schedulable server of type {'|'.join(r.accelerator_types)}", prio)
    limited = {t: st.over_limit(job, t) for t in types}
    types = [t for t in types if limited[t] is None]
    if not types:
        return Wait(job.id, WaitCode.OVER_QUOTA, "over quota: " + "; ".join(v for v in limited.values() if v), prio)
    prices = {t: snap.prices.get(t, 0) for t in types}
    if st.wallets is not None:
        affordable = [t for t in types if st.affordable(job, t, prices[t])]
        if not affordable:
            cheapest = min(types, key=lambda t: st.hold(job, t, prices[t]).cash_fen)
            need = st.hold(job, cheapest, prices[cheapest])
            spendable = st.wallets.get(job.org, (0, []))[0]
            return Wait(job.id, WaitCode.INSUFFICIENT_FUNDS,
                        f"insufficient funds: the hold for its time limit is {need.total_fen} fen ({need.voucher_fen} from "
                        f"vouchers, {need.cash_fen} from the account); org {job.org} can spend {spendable} from its account",
                        prio)
        types = affordable
    types = [t for t in types if st.caps[t].could_ever_fit(r)]
    if not types:
        return Wait(job.id, WaitCode.NEVER_FITS,
                    f"cannot fit: no {r.nodes} server(s) of {'|'.join(r.accelerator_types)} with {r.devices_per_node} device(s)", prio)

    ends = st.now + job.time_limit_s
    options = []
    strategy = snap.config.placement
    scarce = strategy == "auto" and snap.workload is not None  # FGD + scarcity; "fgd" is the plain baseline
    if strategy == "auto":
        strategy = "fgd" if snap.workload is not None else "bucket"
    if strategy != "bucket" and r.nodes == 1:
        how = PLACED_BY.get(strategy, strategy) + (" less scarcity" if scarce else "")
        if scarce and r.fractional and pairing.share_plan(snap.workload).active:
            how += ", the device by the share plan"
        scored = _place_scored(st, job, types, ends, strategy, scarce)
        if scored is not None:
            options.append((prices[scored[0]], 0, *scored))
    else:
        how = PLACED_BY["bucket"]
        for order, t in enumerate(types):
            placements = st.caps[t].place(r, st.veto(t, ends))
            if placements is not None:
                options.append((prices[t], order, t, placements))
    if options:
        price, _, t, placements = min(options, key=lambda o: o[:2])
        st.commit(job, t, placements, price)
        where = ", ".join(f"{p.node}[{','.join(map(str, p.devices))}]" for p in placements)
        return Start(job.id, t, placements, f"priority {prio.value:.3f} ({prio.explain()}) on {t}: {where}, placed by {how}", prio,
                     r.device_milli)

    if guaranteed and snap.config.reclaim:
        for t in types:
            if st.guarantee_room(job, t):
                wait = _reclaim(st, job, t, prio, preempts)
                if wait is not None:
                    return wait
    return _blocked(st, job, types, prio)


def _reclaim(st: _State, job: JobRequest, t: str, prio: Priority, preempts: list[Preempt]) -> Wait | None:
    found = find_victims(job.org, job.resources, st.caps[t], st.snap.running, st.borrowers, st.stopping, st.rank)
    if found is None:
        return None
    victims, free_after = found
    for v in victims:
        st.stopping.add(v.id)
        preempts.append(Preempt(v.id, job.id, f"preempted: org {v.org} borrows {t} beyond its guarantees and "
                                              f"org {job.org} reclaims its guarantee for job {job.id}"))
    stopping = [j for j in st.snap.running if j.id in st.stopping and j.accelerator_type == t]
    at = max([st.now] + [st.now + v.grace_s for v in victims] + [j.stop_by for j in stopping if j.stop_by is not None])
    need = 1 if job.resources.fractional else job.resources.devices_per_node
    # Nobody else may take what the reclaiming job needs on its servers until it starts.
    st.reservations[t].append(Reservation(job.id, t, at, {n: k - need for n, k in free_after.items()}))
    names = ", ".join(str(v.id) for v in victims) or "already stopping"
    return Wait(job.id, WaitCode.RECLAIMING,
                f"reclaiming its guarantee on {t}: waiting for preempted job(s) {names} to stop; "
                f"reserved {', '.join(sorted(free_after))}", prio, at)


def _blocked(st: _State, job: JobRequest, types: list[str], prio: Priority) -> Wait:
    r = job.resources
    devices = max(1, r.total_milli // 1000)
    # Would it fit now but for a reservation? Then say whose.
    for t in types:
        if st.reservations.get(t) and st.caps[t].place(r) is not None:
            res = st.reservations[t][0]
            return Wait(job.id, WaitCode.BLOCKED_BY_RESERVATION,
                        f"would delay the reservation of job {res.job_id} on {t} (servers {res.describe()})", prio,
                        _estimate(st, t, devices))
    # Reserve on the type where it can start earliest (then the cheaper one), if that type
    # still has a reservation to give.
    prices = st.snap.prices
    options = []
    for order, t in enumerate(types):
        if len(st.reservations[t]) < st.snap.config.backfill_depth:
            res = st.timelines[t].reserve(job.id, r, st.caps[t], st.now)
            if res is not None:
                options.append((res.at, prices.get(t, 0), order, t, res))
    if options:
        _, _, _, t, res = min(options, key=lambda o: o[:3])
        st.reservations[t].append(res)
        return Wait(job.id, WaitCode.RESERVED,
                    f"next in line on {t}: reserved servers {res.describe()} from its estimated start", prio, res.at)
    # Otherwise an estimate on the type that promises the earliest start (while estimates
    # are still given this cycle; past `estimate_depth` the first type is named, cheaply).
    depth = st.snap.config.estimate_depth
    if any(_estimator(st, t).count < depth for t in types):
        best = min(types, key=lambda t: (_peek(st, t, devices), prices.get(t, 0), types.index(t)))
    else:
        best = types[0]
    return Wait(job.id, WaitCode.NO_CAPACITY_NOW,
                f"waiting for capacity on {'|'.join(types)} ({st.caps[best].total_free} device(s) free on {best})", prio,
                _estimate(st, best, devices))


def _estimator(st: _State, t: str) -> Estimator:
    est = st.estimators.get(t)
    if est is None:
        releases = [(end, k) for end, _, k in st.timelines[t].events]
        est = st.estimators[t] = Estimator(st.caps[t].total_free, releases)
    return est


def _peek(st: _State, t: str, devices: int) -> float:
    """When the type could start `devices` after the blocked jobs already estimated there
    (infinity if never, from what is known)."""
    at = _estimator(st, t).peek(devices, st.now)
    return float("inf") if at is None else at


def _estimate(st: _State, t: str, devices: int) -> float | None:
    if st.snap.config.estimate_depth <= 0:  # no estimates: not even the timeline is needed
        return None
    est = _estimator(st, t)
    if est.count >= st.snap.config.estimate_depth:
        return None
    return est.estimate(devices, st.now)
