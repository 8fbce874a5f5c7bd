"""Lower bounds of the FGD protocol's figure (scheduler/sim/bound.py): hand-checked instances,
brute force on small ones, and never above what the simulator's policies actually reach."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.sim.bound import arrived_at_100, fgd_bounds, max_fill, min_share_devices
from scheduler.sim.model import SimCluster, SimJob, SimServer
from scheduler.sim.engine import Simulator
from scheduler.sim.metrics import summarize_fgd
from scheduler.sim.run import Run, policy_for, simulate, tie_rank, workload_of


def share(i: int, milli: int) -> SimJob:
    return SimJob(i, 0, 1, 1, device_milli=milli)


def whole(i: int, k: int = 1) -> SimJob:
    return SimJob(i, 0, 1, k)


def test_hand_checked_floors() -> None:
    """Invariants, by hand: 810+160 twice fills two devices to 970 (share floor 60 of 2000 =
    3 %); three 600s need three devices (more than two: no share floor) and at most 1200 of
    2000 can be filled (40 %); leaving an 810 out for a whole GPU fills 1810 (9.5 %) where
    placing both 810s wastes 380 (19 %)."""
    b = fgd_bounds([share(1, 810), share(2, 160), share(3, 810), share(4, 160)], 2)
    assert (b.share_devices, b.share_floor_pct, b.relaxed_floor_pct) == (2, pytest.approx(3.0), pytest.approx(3.0))
    b = fgd_bounds([share(1, 600), share(2, 600), share(3, 600)], 2)
    assert b.share_devices == 3 and b.share_floor_pct is None and b.relaxed_floor_pct == pytest.approx(40.0)
    b = fgd_bounds([share(1, 810), share(2, 810), whole(3), whole(4)], 2)
    assert b.arrived_jobs == 3  # 0.81 + 0.81 + 1 >= 2: the second whole GPU arrives after 100 %
    assert b.share_floor_pct == pytest.approx(19.0) and b.relaxed_floor_pct == pytest.approx(9.5)


def test_arrivals_are_cut_where_the_curve_records_100() -> None:
    """Invariant: the bound sees the jobs through the one that brings arrived GPU to capacity."""
    jobs = [whole(1), share(2, 500), SimJob(3, 0, 1, 0), whole(4), whole(5)]
    assert [j.id for j in arrived_at_100(jobs, 2)] == [1, 2, 3, 4]


def _brute_min_devices(sizes: list[int]) -> int:
    for k in range(1, len(sizes) + 1):
        for assign in itertools.product(range(k), repeat=len(sizes)):
            load = [0] * k
            for s, d in zip(sizes, assign):
                load[d] += s
            if max(load) <= 1000:
                return k
    return len(sizes)


def _brute_max_fill(sizes: list[int], devices: int) -> int:
    best = 0
    for assign in itertools.product(range(devices + 1), repeat=len(sizes)):  # `devices` = left out
        load = [0] * devices
        for s, d in zip(sizes, assign):
            if d < devices:
                load[d] += s
        if max(load, default=0) <= 1000:
            best = max(best, sum(load))
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([50, 160, 230, 320, 470, 650, 810, 1000]), min_size=1, max_size=6), st.integers(1, 3))
def test_lp_bounds_never_beat_the_exact_optimum(sizes: list[int], devices: int) -> None:
    """Invariants: the LP's device count (rounded up) is <= the fewest devices found by trying
    every assignment, and its fill is >= the best fill of any assignment (LP = relaxation)."""
    shares = [s for s in sizes if s < 1000]
    if shares:
        assert min_share_devices(Counter(shares)) <= _brute_min_devices(shares)
    assert max_fill(Counter(sizes), devices) >= _brute_max_fill(sizes, devices) - 1e-6


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([0, 1, 1, 2, 4]), st.sampled_from([1000, 1000, 810, 470, 320, 160])),
                min_size=4, max_size=40))
def test_no_policy_leaves_less_than_the_floors(shapes: list[tuple[int, int]]) -> None:
    """Invariants, on random arrivals replayed by the simulator on two 4-GPU servers: every
    policy's unallocated % at 100 % is >= the relaxed floor, and >= the share floor whenever
    it placed every share pod that arrived by then."""
    jobs = [SimJob(i + 1, 0, 1, k, device_milli=m if k == 1 else 1000, cpu_milli=1000, memory_mib=1024)
            for i, (k, m) in enumerate(shapes)]
    jobs += [whole(len(jobs) + 1 + i) for i in range(8)]  # arrivals always reach 100 %
    cluster = SimCluster((SimServer("a", "gpu", 4), SimServer("b", "gpu", 4)))
    b = fgd_bounds(jobs, 8)
    seen = {j.id for j in arrived_at_100(jobs, 8)}
    for name in ("suanli", "fgd", "bestfit", "fifo"):
        policy, cl = policy_for(name, cluster, {})
        sim = Simulator(cl, policy, lambda j: 1.0, workload_of(jobs), tie_rank(cl, 0))
        got = summarize_fgd(sim.run_fgd(jobs))["unallocated_gpu_pct_at_100"]
        assert got >= b.relaxed_floor_pct - 1e-9, name
        dropped = [i for i in seen if sim.records[i].status == "DROPPED" and sim.records[i].job.device_milli < 1000]
        if not dropped and b.share_floor_pct is not None:
            assert got >= b.share_floor_pct - 1e-9, name


def test_simulate_reports_bounds_per_seed_and_their_medians() -> None:
    """Invariant: with `bounds`, fgd mode adds per-seed floors and their medians (relaxed <=
    share floor: leaving pods out can only help)."""
    cluster = SimCluster((SimServer("a", "gpu", 2),))
    arrivals = {1: [share(1, 810), share(2, 810), whole(3)], 2: [share(1, 600), share(2, 600), share(3, 600)]}
    out = simulate(Run("fgd", cluster, arrivals_by_seed=arrivals, bounds=True), ["bestfit"])
    seeds = out["bounds"]["seeds"]
    assert seeds[1]["share_floor_pct"] == pytest.approx(19.0) and seeds[2]["share_floor_pct"] is None
    assert out["bounds"]["median_share_floor_pct"] == pytest.approx(19.0)
    assert out["bounds"]["median_relaxed_floor_pct"] == pytest.approx((9.5 + 40.0) / 2)
    assert "bounds" not in simulate(Run("fgd", cluster, arrivals_by_seed=arrivals), ["bestfit"])
