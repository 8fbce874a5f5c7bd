"""The share plan of the suanli policy (scheduler/policy/pairing.py) and its use in placement.

Invariants checked here:
- The duals price every packing pattern at most 1 (dual feasibility) and the demand at the
  LP optimum (strong duality), on hand-checked and on random small instances (hypothesis,
  against every pattern enumerated by brute force).
- `allows(C, s)` holds exactly when C + s is part of some pattern worth 1 (an optimal pattern),
  and always for a size of the workload on an empty device.
- `DeviceShares` kept by adds and removes equals one read from the running jobs; a fork leaves
  its base alone.
- In a decision, a share does not join a partly used device the plan rules out when another
  device is open to it, while the plain `fgd` baseline does; a share that fits only on such a
  device is still placed (the plan never turns work away); the simulator decides the same
  with its kept device shares and without them.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from scheduler.policy import capacity, decide
from scheduler.policy.fragment import TaskShape, Workload
from scheduler.policy.pairing import DeviceShares, SharePlan, share_plan
from scheduler.sim.engine import Simulator
from scheduler.sim.run import workload_of
from scheduler.types import Placement, PolicyConfig, RunningJob, Snapshot
from tests.unit.policy_builders import NOW, make_job, make_node, make_snapshot
from tests.unit.test_scarcity import _small_trace, replay


def _patterns(sizes: list[int]) -> list[tuple[int, ...]]:
    """Every non-empty multiset of the sizes that fits in one device."""
    out: list[tuple[int, ...]] = []

    def grow(i: int, left: int, cur: list[int]) -> None:
        if i == len(sizes):
            if cur:
                out.append(tuple(cur))
            return
        k = 0
        while k * sizes[i] <= left:
            grow(i + 1, left - k * sizes[i], cur + [sizes[i]] * k)
            k += 1

    grow(0, 1000, [])
    return out


def _lp_devices(weights: Counter[int]) -> float:
    """The cutting-stock LP by brute-force patterns: fewest devices covering demand 1000 w_s/W."""
    sizes = sorted(weights)
    pats = _patterns(sizes)
    total = sum(weights.values())
    a = [[-p.count(s) for p in pats] for s in sizes]
    b = [-1000.0 * weights[s] / total for s in sizes]
    res = linprog([1.0] * len(pats), A_ub=a, b_ub=b, bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


def test_duals_of_the_alibaba_sizes_and_what_they_allow() -> None:
    """The default list's share sizes: an 810 needs a device of its own (y = 1), 470s pair
    (1/2), a 650 takes one 320 (2/3 + 1/3). So a 470 may not join a lone 320 (it would leave
    210 that no pattern worth 1 fills), a 650 may; two 470s may share; a 230 may not join a
    lone 650 (650 + 230 is worth 11/12 and nothing else fits)."""
    w = Counter({810: 1078, 470: 750, 320: 328, 650: 253, 230: 140, 460: 128, 590: 75, 160: 74, 550: 72, 220: 62,
                 370: 47, 110: 24, 480: 19, 50: 7, 330: 7, 350: 6, 270: 4, 440: 2, 140: 1, 290: 1})
    plan = SharePlan(w)
    assert round(plan.y[810], 6) == 1.0 and round(plan.y[470], 6) == 0.5
    assert round(plan.y[650], 6) == round(2 / 3, 6) and round(plan.y[320], 6) == round(1 / 3, 6)
    assert not plan.allows([320], 470) and plan.allows([320], 650) and plan.allows([470], 470)
    assert not plan.allows([650], 230) and plan.allows([810], 160) and not plan.allows([810], 230)
    assert all(plan.allows([], s) for s in w)
    assert plan.value(475) == plan.y[470] and plan.value(40) == 0.0  # outside the workload: round down
    assert not plan.allows([600], 500)  # over a device


@st.composite
def share_weights(draw):  # type: ignore[no-untyped-def]
    sizes = draw(st.lists(st.sampled_from([150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800]), min_size=1, max_size=4,
                          unique=True))
    return Counter({s: draw(st.integers(1, 20)) for s in sizes})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weights=share_weights())
def test_duals_are_feasible_and_optimal_and_allows_means_part_of_an_optimal_pattern(weights: Counter[int]) -> None:
    plan = SharePlan(weights)
    total = sum(weights.values())
    pats = _patterns(sorted(weights))
    worth = {p: sum(plan.y[s] for s in p) for p in pats}
    assert max(worth.values()) <= 1 + 1e-6  # dual feasible
    assert abs(sum(1000.0 * weights[s] / total * plan.y[s] for s in weights) - _lp_devices(weights)) < 1e-5  # optimal
    optimal = [Counter(p) for p, v in worth.items() if v >= 1 - 1e-6]
    for p in pats:
        for c in range(len(p)):
            content, s = list(p[:c]) + list(p[c + 1:]), p[c]
            need = Counter(content + [s])
            expected = any(all(o[x] >= n for x, n in need.items()) for o in optimal)
            assert plan.allows(content, s) == expected, (content, s)
    assert all(plan.allows([], s) for s in weights)


def test_device_shares_kept_equal_the_running_jobs_and_a_fork_is_separate() -> None:
    rnd = random.Random(4)
    kept = DeviceShares()
    running: list[RunningJob] = []
    for i in range(200):
        if running and rnd.random() < 0.4:
            j = running.pop(rnd.randrange(len(running)))
            if j.device_milli < 1000:
                for p in j.placements:
                    for d in p.devices:
                        kept.remove(p.node, d, j.device_milli)
        else:
            milli = rnd.choice([250, 500, 1000])
            j = RunningJob(i, "o", "G", (Placement(f"n{rnd.randrange(3)}", (rnd.randrange(4),)),), NOW, 60, device_milli=milli)
            running.append(j)
            if milli < 1000:
                for p in j.placements:
                    for d in p.devices:
                        kept.add(p.node, d, milli)
        if i % 10 == 0:
            assert kept.as_dict() == DeviceShares.of(running).as_dict()
    before = kept.as_dict()
    fork = kept.fork()
    fork.add("n9", 0, 300)
    assert kept.as_dict() == before and fork.as_dict() == {**before, ("n9", 0): [300]}


WORKLOAD = Workload((TaskShape(1000, 470, 1, (), 0.4), TaskShape(1000, 650, 1, (), 0.2), TaskShape(1000, 320, 1, (), 0.2),
                     TaskShape(1000, 1000, 1, (), 0.2)))


def _snap(nodes, running, pending, placement: str = "auto") -> Snapshot:  # type: ignore[no-untyped-def]
    return make_snapshot(nodes, pending, running, workload=WORKLOAD, config=PolicyConfig(placement=placement))


def test_a_share_avoids_the_device_the_plan_rules_out_and_fgd_does_not() -> None:
    """s0 device 0 holds a 320 (680 free). A 470 arriving: plain FGD puts it there (it fills
    the partly used device), the plan keeps that device for a 650 and opens another."""
    nodes = [make_node("s0", count=2, shared=((0, 680),)), make_node("s1", count=2)]
    running = [RunningJob(9, "o2", nodes[0].accelerator_type, (Placement("s0", (0,)),), NOW - 10, 3600, device_milli=320)]
    job = make_job(1, milli=470)
    fgd = decide(_snap(nodes, running, [job], "fgd"), NOW)
    ours = decide(_snap(nodes, running, [job]), NOW)
    assert [(p.node, p.devices) for p in fgd.starts[0].placements] == [("s0", (0,))]
    assert [(p.node, p.devices) for p in ours.starts[0].placements] != [("s0", (0,))]
    assert ours.starts[0].reason.endswith("placed by least fragmentation growth (FGD) less scarcity, the device by the share plan")
    assert "share plan" not in fgd.starts[0].reason
    whole = decide(_snap(nodes, running, [make_job(3)]), NOW)  # a whole device: no share plan involved
    assert whole.starts[0].reason.endswith("(FGD) less scarcity")
    # A 650 may join the 320.
    ours650 = decide(_snap(nodes, running, [make_job(2, milli=650)]), NOW)
    assert [(p.node, p.devices) for p in ours650.starts[0].placements] == [("s0", (0,))]


def test_the_plan_never_turns_away_a_share_that_fits() -> None:
    """Only the ruled-out device has room: the 470 still starts there."""
    nodes = [make_node("s0", count=1, shared=((0, 680),))]
    running = [RunningJob(9, "o2", nodes[0].accelerator_type, (Placement("s0", (0,)),), NOW - 10, 3600, device_milli=320)]
    d = decide(_snap(nodes, running, [make_job(1, milli=470)]), NOW)
    assert [(p.node, p.devices) for p in d.starts[0].placements] == [("s0", (0,))]


def test_shares_started_earlier_in_a_decision_count() -> None:
    """A 320, a 470 and a 650 in one decision on one empty two-device server: the 320 opens a
    device; the 470 may not join it (the decision's own start counts), so it opens the other;
    the 650 joins the 320."""
    nodes = [make_node("s0", count=2)]
    jobs = [make_job(1, milli=320, cls="high"), make_job(2, milli=470), make_job(3, milli=650, cls="low")]  # in this order
    d = decide(_snap(nodes, [], jobs), NOW)
    assert [s.job_id for s in d.starts] == [1, 2, 3]
    where = {s.job_id: s.placements[0].devices for s in d.starts}
    assert where[1] == where[3] != where[2]


def test_the_simulator_decides_the_same_with_and_without_its_kept_device_shares() -> None:
    cluster, jobs = _small_trace(12)
    workload = workload_of(jobs)
    assert share_plan(workload).active

    def drop(sim: Simulator) -> None:
        sim.device_shares = None

    kept, sim = replay(cluster, jobs, workload)
    assert sim.device_shares is not None
    assert sim.device_shares.as_dict() == DeviceShares.of(sim.snapshot(0.0).running).as_dict()
    read_here, _ = replay(cluster, jobs, workload, setup=drop)
    assert kept == read_here


def test_capacity_index_is_untouched_by_the_plan() -> None:
    """The plan only reads: the producer's capacity index is the same after a decision."""
    views = (make_node("s0", count=2, shared=((0, 680),)),)
    caps = capacity.build(views)
    before = caps[views[0].accelerator_type].views()
    running = [RunningJob(9, "o2", views[0].accelerator_type, (Placement("s0", (0,)),), NOW - 10, 3600, device_milli=320)]
    decide(make_snapshot([], [make_job(1, milli=470)], running, capacity=caps, workload=WORKLOAD), NOW)
    assert caps[views[0].accelerator_type].views() == before
