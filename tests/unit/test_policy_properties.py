"""Properties of the fair-share policy over random snapshots (hypothesis)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.policy import decide
from scheduler.types import Placement, PolicyConfig, Quota, RunningJob, Snapshot, WaitCode

from tests.unit.policy_builders import A100, B910, NOW, make_job, make_node, tree

ORGS = ["o1", "o2", "o3", "o4"]
POOL = {"o1": "pa", "o2": "pa", "o3": "pb", "o4": "pb"}


@st.composite
def snapshots(draw, single_device_pending: bool = False, full: bool = False):  # type: ignore[no-untyped-def]
    n_nodes = draw(st.integers(1, 6))
    nodes, running, rid = [], [], 1000
    for i in range(n_nodes):
        type_ = draw(st.sampled_from([A100, B910]))
        count = draw(st.sampled_from([4, 8]))
        rack = draw(st.sampled_from(["r1", "r2", None]))
        used: list[int] = []
        free = list(range(count))
        for _ in range(draw(st.integers(0, 3)) if not full else count):  # running jobs on this server
            k = draw(st.integers(1, 4))
            if full:
                k = min(k, len(free))
            if len(free) < k or k == 0:
                break
            devs, free = tuple(free[:k]), free[k:]
            used.extend(devs)
            org = draw(st.sampled_from(ORGS))
            started = NOW - draw(st.integers(1, 5000))
            stop = NOW + 5 if draw(st.integers(0, 9)) == 0 and not full else None
            running.append(RunningJob(rid, org, type_, (Placement(f"n{i}", devs),), started, draw(st.sampled_from([600, 3600, 7200])),
                                      started - 10, "p", POOL[org], draw(st.sampled_from(["normal", "low", "preemptible"])),
                                      1000, 10.0, stop))
            rid += 1
        nodes.append(make_node(f"n{i}", type_, count, tuple(used), rack=rack))
    pending = []
    for j in range(draw(st.integers(0, 12))):
        org = draw(st.sampled_from(ORGS))
        types = draw(st.sampled_from([(A100,), (B910,), (A100, B910)]))
        if single_device_pending:
            devices, n = 1, 1
        else:
            devices, n = draw(st.sampled_from([1, 2, 4, 8])), draw(st.sampled_from([1, 1, 1, 2]))
        pending.append(make_job(j + 1, devices, n, types, org=org, pool=POOL[org], t=draw(st.integers(0, 90)),
                                limit=draw(st.sampled_from([300, 3600, 36000])), cls=draw(st.sampled_from(["normal", "high", "low"]))))
    quotas = {}
    for org in ORGS:
        for t in (A100, B910):
            g = draw(st.integers(0, 4))
            lim = draw(st.sampled_from([None, g + 4, g + 16]))
            quotas[(org, t)] = Quota(g, lim)
    pool_quotas = {("pb", A100): Quota(draw(st.integers(0, 4)), draw(st.sampled_from([None, 8, 16])))}
    funds = draw(st.sampled_from([None, {o: draw(st.integers(0, 20000)) for o in ORGS}]))
    share = tree({o: (POOL[o], draw(st.integers(1, 4)), float(draw(st.integers(0, 1000)))) for o in ORGS})
    return Snapshot(tuple(nodes), tuple(pending), tuple(running), share, quotas, pool_quotas,
                    prices={A100: 1200, B910: 800}, funds=funds, config=PolicyConfig())


def usage_by(snap: Snapshot, starts) -> tuple[Counter, Counter]:  # type: ignore[no-untyped-def]
    org, pool = Counter(), Counter()
    jobs = {j.id: j for j in snap.pending}
    for j in snap.running:
        org[(j.org, j.accelerator_type)] += j.milli
        pool[(j.pool, j.accelerator_type)] += j.milli
    for s in starts:
        m = jobs[s.job_id].resources.total_milli
        org[(jobs[s.job_id].org, s.accelerator_type)] += m
        pool[(jobs[s.job_id].pool, s.accelerator_type)] += m
    return org, pool


def reference_borrowing(snap: Snapshot) -> set[int]:
    """Independent statement of 'borrowing': in start order, a job is protected if the jobs
    started up to it stay within its org's guarantee, or within its pool's guarantee;
    borrowing = not protected."""
    def inside(key_of, quotas) -> set[int]:  # type: ignore[no-untyped-def]
        out, groups = set(), defaultdict(list)
        for j in snap.running:
            groups[key_of(j)].append(j)
        for key, jobs in groups.items():
            total = 0
            for j in sorted(jobs, key=lambda j: (j.started_at, j.id)):
                total += j.milli
                if total <= quotas.get(key, Quota()).guaranteed * 1000:
                    out.add(j.id)
        return out

    protected = inside(lambda j: (j.org, j.accelerator_type), snap.quotas) | inside(
        lambda j: (j.pool, j.accelerator_type), snap.pool_quotas)
    return {j.id for j in snap.running} - protected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_invariants(snap: Snapshot) -> None:
    """Invariants: no device is given twice or while in use; gangs get exactly `nodes`
    distinct servers; only accepted types; no org or pool goes over a limit it was within;
    funds cover every start's hold; victims are borrowing jobs of other orgs that are not
    already stopping; every pending job gets exactly one decision."""
    d = decide(snap, NOW)
    nodes = {n.name: n for n in snap.nodes}
    jobs = {j.id: j for j in snap.pending}
    taken: Counter = Counter()
    for s in d.starts:
        job = jobs[s.job_id]
        assert s.accelerator_type in job.resources.accelerator_types
        assert len({p.node for p in s.placements}) == len(s.placements) == job.resources.nodes
        for p in s.placements:
            assert nodes[p.node].accelerator_type == s.accelerator_type and nodes[p.node].schedulable
            assert len(p.devices) == job.resources.devices_per_node
            for dev in p.devices:
                assert dev in nodes[p.node].free_devices
                taken[(p.node, dev)] += 1
    assert all(v == 1 for v in taken.values())
    before_org, before_pool = usage_by(snap, [])
    org, pool = usage_by(snap, d.starts)
    for key, q in snap.quotas.items():
        if q.limit is not None and before_org[key] <= q.limit * 1000:
            assert org[key] <= q.limit * 1000
    for key, q in snap.pool_quotas.items():
        if q.limit is not None and before_pool[key] <= q.limit * 1000:
            assert pool[key] <= q.limit * 1000
    if snap.funds is not None:
        spent: Counter = Counter()
        for s in d.starts:
            job = jobs[s.job_id]
            spent[job.org] += -(-job.resources.total_milli * job.time_limit_s * snap.prices[s.accelerator_type] // 3_600_000)
        assert all(spent[o] <= snap.funds[o] for o in spent)
    borrowers = reference_borrowing(snap)
    running = {j.id: j for j in snap.running}
    for p in d.preemptions:
        victim, claimant = running[p.job_id], jobs[p.for_job]
        assert p.job_id in borrowers and victim.stop_by is None and victim.org != claimant.org
    assert len({p.job_id for p in d.preemptions}) == len(d.preemptions)
    decided = [s.job_id for s in d.starts] + [w.job_id for w in d.waits]
    assert sorted(decided) == sorted(jobs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(snap: Snapshot, rnd: random.Random) -> None:
    """Invariant: decide() depends only on (snapshot, now): the same decisions come back,
    and shuffling the order of servers, pending and running jobs changes nothing."""
    d = decide(snap, NOW)
    assert decide(snap, NOW) == d
    shuffled = Snapshot(tuple(rnd.sample(snap.nodes, len(snap.nodes))), tuple(rnd.sample(snap.pending, len(snap.pending))),
                        tuple(rnd.sample(snap.running, len(snap.running))), tuple(rnd.sample(snap.share_tree, len(snap.share_tree))),
                        snap.quotas, snap.pool_quotas, snap.classes, snap.prices, snap.funds, snap.config)
    d2 = decide(shuffled, NOW)
    assert sorted(d2.starts, key=lambda s: s.job_id) == sorted(d.starts, key=lambda s: s.job_id)
    assert sorted(d2.preemptions, key=lambda p: p.job_id) == sorted(d.preemptions, key=lambda p: p.job_id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(snapshots(single_device_pending=True), snapshots(single_device_pending=True, full=True)))
def test_org_below_guarantee_is_served_within_one_decision(snap: Snapshot) -> None:
    """Invariant: when guarantees fit the capacity of each type, an org below its guarantee
    with a pending one-device job inside that guarantee is served in this decision: the job
    (or an earlier job of the same org) starts, or borrowing jobs are preempted for it
    (reclaiming). No limits or funds get in the way here."""
    snap = Snapshot(snap.nodes, snap.pending, snap.running, snap.share_tree,
                    {k: Quota(q.guaranteed, None) for k, q in snap.quotas.items()}, {}, snap.classes, snap.prices, None, snap.config)
    cap = Counter()
    for n in snap.nodes:
        cap[n.accelerator_type] += n.device_count
    for t in (A100, B910):
        if sum(q.guaranteed for (o, tt), q in snap.quotas.items() if tt == t) > cap[t]:
            return  # over-promised capacity: guarantees cannot all hold
    d = decide(snap, NOW)
    use, _ = usage_by(snap, [])
    outcome = {s.job_id: "start" for s in d.starts} | {w.job_id: w.code for w in d.waits}
    for job in snap.pending:
        t = job.resources.accelerator_types[0]
        g = snap.quotas[(job.org, t)].guaranteed * 1000
        if len(job.resources.accelerator_types) == 1 and t in cap and use[(job.org, t)] + 1000 <= g:
            served_org = [j for j in snap.pending if j.org == job.org and outcome[j.id] in ("start", WaitCode.RECLAIMING)]
            assert served_org, (job, outcome)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_prebuilt_capacity_gives_the_same_decisions_and_is_not_changed(snap: Snapshot) -> None:
    """Invariants: a producer-kept capacity index and usage sums (as the simulator passes)
    yield exactly the decisions computed from the server list and the running jobs, and
    `decide` leaves that index untouched."""
    from dataclasses import replace

    from scheduler.policy import capacity

    caps = capacity.build(snap.nodes)
    before = {t: (list(map(list, c.buckets)), list(c.shared), c.total_free,
                  {n: (list(x.free), dict(x.shared), x.cpus, x.memory_mb) for n, x in c.nodes.items()}) for t, c in caps.items()}
    org_use, pool_use = usage_by(snap, [])
    assert decide(replace(snap, nodes=(), capacity=caps, in_use=(dict(org_use), dict(pool_use))), NOW) == decide(snap, NOW)
    after = {t: (list(map(list, c.buckets)), list(c.shared), c.total_free,
                 {n: (list(x.free), dict(x.shared), x.cpus, x.memory_mb) for n, x in c.nodes.items()}) for t, c in caps.items()}
    assert after == before
