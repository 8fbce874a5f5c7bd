"""The scarcity penalty of the suanli policy's placement (scheduler/policy/scoring.py,
`ShapeFits`, `choose(..., scarcity=...)`; wired in scheduler/policy/multifactor.py).

Invariants checked here:
- Where plain FGD would take the last server on which a rare workload shape still fits, FGD
  with the scarcity penalty takes another server, so the rare shape stays placeable; the
  count of servers per shape is over the whole cluster (every accelerator type).
- `ShapeFits.counts` kept up to date with `remove`/`add` equals a direct count.
- The policy's default placement ("auto" with a target workload) applies the penalty, the
  `fgd` baseline (placement="fgd") does not, and within one decision each placement sees
  the counts left by the ones before it.
- The penalty is refused for strategies other than fgd.
- `LiveShapeFits` (the counts a producer keeps across decisions) equals a fresh count after
  any starts and ends it is told of, and the simulator's decisions are the same with it in
  the snapshot and without it (the policy then counts itself).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from scheduler.policy import capacity, decide
from scheduler.policy.capacity import NodeCap
from scheduler.policy.scarcity import LiveShapeFits, ShapeFits
from scheduler.policy.fragment import TaskShape, Workload
from scheduler.policy.scoring import SCARCITY_WEIGHT, choose, node_scores
from scheduler.sim.engine import Simulator
from scheduler.sim.model import SimCluster, SimJob, SimServer
from scheduler.sim.run import workload_of
from scheduler.types import Decisions, NodeView, Placement, PolicyConfig, Resources, Snapshot
from tests.unit.policy_builders import NOW, make_job, make_node, make_snapshot

G2, G3 = "G2", "G3"

# A: the common one-device task; B: CPU-heavy, G2 only (rare: fits on one server below);
# C: three devices on any type.
WORKLOAD = Workload((TaskShape(1000, 1000, 1, (), 0.5),
                     TaskShape(40_000, 1000, 1, (G2,), 0.25),
                     TaskShape(1000, 1000, 3, (), 0.25)))
REQUEST = Resources((G2,), 1, 1, 4000, 1024, 1000)  # one device, 4 CPUs, G2 only


def cap(name: str, type_: str, free: list[int], cpus: int) -> NodeCap:
    return NodeCap(name, type_, "", 8, list(free), cpus, 1 << 20, {})


def cluster() -> tuple[NodeCap, NodeCap, list[NodeCap]]:
    x = cap("x", G2, [0, 1], 42_000)  # the only server where B fits (and it would not after the job)
    y = cap("y", G2, [0, 1, 2], 30_000)  # C fits here, not after the job
    z = [cap(f"z{i}", G3, [0, 1, 2, 3], 30_000) for i in range(3)]  # C fits on these G3 servers too
    return x, y, z


def by_type(nodes: list[NodeCap]) -> dict[str, list[NodeCap]]:
    out: dict[str, list[NodeCap]] = {}
    for n in nodes:
        out.setdefault(n.type, []).append(n)
    return out


def fresh_counts(workload: Workload, nodes: list[NodeCap]) -> list[int]:
    """A direct count: shape m fits where its type is allowed, CPU suffices and k devices
    have a free share >= its per-device share (a wholly free device has 1000)."""
    out = []
    for m in workload.shapes:
        if not m.uses_gpu:
            continue
        out.append(sum(1 for n in nodes if (not m.types or n.type in m.types) and n.cpus >= m.cpu_milli
                       and len(n.free) + sum(1 for v in n.shared.values() if v >= m.gpu_milli) >= m.num_gpu))
    return out


def take(node: NodeCap, r: Resources, devices: tuple[int, ...]) -> None:
    node.free = [d for d in node.free if d not in devices]
    node.cpus -= r.cpus_per_node
    node.memory_mb -= r.memory_mb_per_node


def test_scarcity_keeps_the_rare_shape_placeable() -> None:
    """FGD scores x higher (B dies there, but x keeps fewer free devices to fragment) and
    takes the only server where B fits; with the penalty (x: 100·λ·0.25/1 = 500 points off,
    y: 100·λ·0.25/4 = 125 off as C still fits on the three G3 servers) it takes y, and B
    still fits somewhere afterwards. Counting only the request's own type (C on y alone)
    would make both penalties 500 and keep x: the count must span every type."""
    assert SCARCITY_WEIGHT == 20.0  # the figures below are for λ = 20
    x, y, z = cluster()
    rank = {"x": 0, "y": 1}
    assert node_scores("fgd", REQUEST, [x, y], WORKLOAD) == {"x": 50, "y": 43}
    assert choose("fgd", REQUEST, [x, y], WORKLOAD, rank=rank)[0].name == "x"  # type: ignore[index]

    fits = ShapeFits(WORKLOAD, by_type([x, y, *z]))
    assert fits.counts.tolist() == [5, 1, 4] == fresh_counts(WORKLOAD, [x, y, *z])
    chosen = choose("fgd", REQUEST, [x, y], WORKLOAD, rank=rank, scarcity=lambda: fits.counts)
    assert chosen is not None and chosen[0].name == "y" and chosen[1] == (0,)

    fits.remove(y)
    take(y, REQUEST, chosen[1])
    fits.add(y)
    assert fits.counts.tolist() == [5, 1, 3]  # B still has its server; C lost only y

    x2, y2, _ = cluster()
    take(x2, REQUEST, (0,))
    assert ShapeFits(WORKLOAD, by_type([x2, y2, *z])).counts[1] == 0  # plain FGD's choice: B fits nowhere

    own_type_only = ShapeFits(WORKLOAD, by_type([x, y]))
    x3, y3, _ = cluster()
    picked = choose("fgd", REQUEST, [x3, y3], WORKLOAD, rank=rank, scarcity=lambda: ShapeFits(WORKLOAD, by_type([x3, y3])).counts)
    assert own_type_only.counts.tolist() == [2, 1, 0] and picked is not None and picked[0].name == "x"


def test_scarcity_is_not_asked_for_when_it_cannot_matter_and_is_refused_for_other_strategies() -> None:
    """The counts are a callback, evaluated only when some candidate fits and a best FGD
    placement loses a shape (the penalty is >= 0, so otherwise FGD's choice stands);
    strategies other than fgd reject the penalty with a clear error."""
    x, y, z = cluster()
    calls: list[int] = []

    def counts() -> np.ndarray:
        calls.append(1)
        return ShapeFits(WORKLOAD, by_type([x, y])).counts

    too_big = Resources((G2,), 4, 1, 4000, 1024, 1000)
    assert choose("fgd", too_big, [x, y], WORKLOAD, scarcity=counts) is None and calls == []
    assert choose("fgd", REQUEST, [x, y], WORKLOAD, scarcity=counts) is not None and calls == [1]
    on_g3 = Resources((G3,), 1, 1, 4000, 1024, 1000)  # 4 -> 3 free on a z: A and C still fit, B never did
    chosen = choose("fgd", on_g3, z, WORKLOAD, scarcity=counts)
    assert chosen == choose("fgd", on_g3, z, WORKLOAD) and chosen is not None and calls == [1]
    with pytest.raises(ValueError, match="scarcity penalty is for fgd"):
        choose("bestfit", REQUEST, [x, y], WORKLOAD, scarcity=counts)


def test_shape_fits_kept_up_to_date_equals_a_fresh_count() -> None:
    """After any sequence of changes to servers, each wrapped in `remove` before and `add`
    after, the counts equal a direct count over the same servers (shares included)."""
    rnd = random.Random(5)
    workload = Workload((TaskShape(1000, 500, 1, (), 0.4), TaskShape(2000, 1000, 2, (G3,), 0.3),
                         TaskShape(8000, 1000, 4, (), 0.2), TaskShape(500, 0, 0, (), 0.1)))
    nodes = [cap(f"n{i}", rnd.choice([G2, G3]), list(range(8)), 32_000) for i in range(12)]
    fits = ShapeFits(workload, by_type(nodes))
    assert fits.counts.tolist() == fresh_counts(workload, nodes) == [12, sum(n.type == G3 for n in nodes), 12]
    for _ in range(60):
        node = rnd.choice(nodes)
        fits.remove(node)
        if rnd.random() < 0.5 and node.free:  # a share of a device
            dev = rnd.choice(node.free)
            node.free.remove(dev)
            node.shared[dev] = rnd.choice([100, 300, 500, 700])
        elif node.free:
            node.free = node.free[rnd.randint(1, len(node.free)):]
        node.cpus = max(0, node.cpus - rnd.choice([0, 1000, 4000]))
        fits.add(node)
        assert fits.counts.tolist() == fresh_counts(workload, nodes)
    assert fits.counts.tolist() != [12, sum(n.type == G3 for n in nodes), 12]  # the changes did change counts


def test_policy_default_placement_applies_the_penalty_and_the_fgd_baseline_does_not() -> None:
    """`decide` with the target workload and the default placement ("auto") puts the job on
    y, as `choose` with the penalty does; `placement="fgd"` (the paper's baseline) on x."""
    nodes = [make_node("x", G2, used=(2, 3, 4, 5, 6, 7), cpus=42_000), make_node("y", G2, used=(3, 4, 5, 6, 7), cpus=30_000),
             *[make_node(f"z{i}", G3, used=(4, 5, 6, 7), cpus=30_000) for i in range(3)]]
    snap = make_snapshot(nodes, [make_job(1, 1, types=(G2,), cpus=4000)], workload=WORKLOAD)
    assert decide(snap, NOW).starts[0].placements[0].node == "y"
    baseline = replace(snap, config=PolicyConfig(placement="fgd"))
    assert decide(baseline, NOW).starts[0].placements[0].node == "x"


def test_each_placement_of_a_decision_sees_the_counts_left_by_the_previous_ones() -> None:
    """Several one-server jobs in one decision are placed exactly as `choose` with the
    penalty places them one by one, recounting the shapes' servers from scratch after each."""
    rnd = random.Random(11)
    types = [G2, G3]
    views = [make_node(f"n{i:02d}", types[i % 2], used=tuple(range(rnd.randint(0, 6))), cpus=rnd.choice([8000, 16_000, 48_000]))
             for i in range(10)]
    jobs = [make_job(i + 1, rnd.choice([1, 1, 2]), types=(G2, G3) if i % 2 else (types[i % 4 // 2],),
                     cpus=rnd.choice([1000, 4000, 8000])) for i in range(8)]
    d = decide(make_snapshot(views, jobs, workload=WORKLOAD), NOW)
    got = {s.job_id for s in d.starts}

    assert len(got) == len(jobs)  # all start, so starts are in the order the policy placed them
    nodes = {v.name: NodeCap(v.name, v.accelerator_type, "", v.device_count, sorted(v.free_devices), v.free_cpus,
                             v.free_memory_mb, {}) for v in views}
    by_id = {j.id: j for j in jobs}
    for s in d.starts:
        r = by_id[s.job_id].resources
        cands = [n for n in nodes.values() if n.type in r.accelerator_types]
        chosen = choose("fgd", r, cands, WORKLOAD, scarcity=lambda: ShapeFits(WORKLOAD, by_type(list(nodes.values()))).counts)
        assert chosen is not None
        node, devices = chosen
        assert (s.placements[0].node, s.placements[0].devices) == (node.name, devices)
        take(node, r, devices)


def test_a_placement_lowers_the_count_the_next_placement_of_the_decision_sees() -> None:
    """Job 1 can only go to x1 (G4) and takes B's place there, leaving x2 the last server
    for B. Job 2 (G2) then avoids x2: its penalty there is 100·λ·0.25/1 = 500 against y's
    250 (C still fits on y and z). With the count from before job 1 (B on 2 servers: 250
    on x2) it would take x2 (FGD 50 vs 43)."""
    workload = Workload((TaskShape(1000, 1000, 1, (), 0.5), TaskShape(40_000, 1000, 1, (G2, "G4"), 0.25),
                         TaskShape(1000, 1000, 3, (), 0.25)))
    nodes = [make_node("x1", "G4", used=(2, 3, 4, 5, 6, 7), cpus=42_000), make_node("x2", G2, used=(2, 3, 4, 5, 6, 7), cpus=42_000),
             make_node("y", G2, used=(3, 4, 5, 6, 7), cpus=30_000), make_node("z", G3, used=(4, 5, 6, 7), cpus=30_000)]
    jobs = [make_job(1, 1, types=("G4",), cpus=4000, t=0), make_job(2, 1, types=(G2,), cpus=4000, t=50)]
    d = decide(make_snapshot(nodes, jobs, workload=workload), NOW)
    assert [(s.job_id, s.placements[0].node) for s in d.starts] == [(1, "x1"), (2, "y")]
    alone = decide(make_snapshot(nodes, jobs[1:], workload=workload), NOW)
    assert alone.starts[0].placements[0].node == "x2"  # with B still on x1, x2 is not the last one


def test_live_shape_fits_recounts_what_changed_to_a_fresh_count() -> None:
    """Told of every changed server (`changed` after a `take` or `give_back` on the producer's
    capacity index), `LiveShapeFits.counts()` equals a fresh `ShapeFits` count over all the
    servers, shares and CPU included; it hands out a copy, so a caller cannot change it."""
    rnd = random.Random(3)
    workload = Workload((TaskShape(1000, 500, 1, (), 0.4), TaskShape(2000, 1000, 2, (G3,), 0.3),
                         TaskShape(24_000, 1000, 4, (), 0.2), TaskShape(500, 0, 0, (), 0.1)))
    caps = capacity.build(tuple(NodeView(f"n{i:02d}", G2 if i % 3 else G3, 8, tuple(range(8)), 32_000, 1 << 20)
                                for i in range(15)))
    live = LiveShapeFits(workload, caps)
    held: list[tuple[str, Placement, Resources]] = []

    def fresh() -> list[int]:
        return ShapeFits(workload, {t: list(c.nodes.values()) for t, c in caps.items()}).counts.tolist()

    start = fresh()
    assert live.counts().tolist() == start
    for step in range(80):
        if held and rnd.random() < 0.4:
            t, p, r = held.pop(rnd.randrange(len(held)))
            caps[t].give_back(p.node, p.devices, r.device_milli, r.cpus_per_node, r.memory_mb_per_node)
        else:
            t = rnd.choice([G2, G3])
            r = rnd.choice([Resources((t,), 1, 1, 1000, 1024, rnd.choice([200, 500, 700])),
                            Resources((t,), rnd.choice([1, 2, 4]), 1, rnd.choice([1000, 8000]), 1024)])
            placed = caps[t].place(r)
            if placed is None:
                continue
            caps[t].take(placed, r)
            p = placed[0]
            held.append((t, p, r))
        live.changed(t, p.node)
        if step % 3 == 0:  # several changes between reads, as several starts in a decision
            counts = live.counts()
            assert counts.tolist() == fresh()
            counts += 100
    assert live.counts().tolist() == fresh() != start


def _small_trace(seed: int) -> tuple[SimCluster, list[SimJob]]:
    """Two types, servers with little or much CPU, whole-device and fractional jobs that
    arrive and leave: enough for rare shapes and the scarcity penalty to matter."""
    rnd = random.Random(seed)
    cluster = SimCluster(servers=tuple(SimServer(f"s{i:02d}", (G2, G3)[i % 2], 8, rnd.choice([16_000, 64_000]), 1 << 20)
                                       for i in range(12)))
    jobs, t = [], 0.0
    for i in range(300):
        t += rnd.expovariate(1 / 30)
        share = rnd.random() < 0.3
        jobs.append(SimJob(i + 1, t, rnd.uniform(60, 3000), 1 if share else rnd.choice([1, 1, 2, 4, 8]),
                           device_milli=rnd.choice([250, 500]) if share else 1000,
                           accelerators=rnd.choice([(G2,), (G3,), ()]), cpu_milli=rnd.choice([1000, 4000, 12_000])))
    return cluster, jobs


def count_calls(obj: Any, name: str, calls: list[int]) -> None:
    """Wrap `obj.name` so that every call adds one to `calls[-1]`."""
    inner = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[-1] += 1
        return inner(*args, **kwargs)
    setattr(obj, name, counted)


def replay(cluster: SimCluster, jobs: list[SimJob], workload: Workload, placement: str = "auto",
           setup: Callable[[Simulator], None] | None = None) -> tuple[list[Decisions], Simulator]:
    """Every decision of the suanli policy over a time-mode replay (10 s cycles, time limits
    2 x duration); `setup` may change the simulator before it runs."""
    seen: list[Decisions] = []

    def policy(snap: Snapshot, now: float) -> Decisions:
        d = decide(snap, now)
        seen.append(d)
        return d

    sim = Simulator(replace(cluster, policy=PolicyConfig(placement=placement)), policy, lambda j: 2 * j.duration_s, workload)
    if setup is not None:
        setup(sim)
    sim.run(jobs, cycle_s=10.0)
    return seen, sim


def test_the_simulator_decides_the_same_with_and_without_its_kept_counts() -> None:
    """On a seeded trace the policy gives exactly the same decisions (starts with their
    devices, waits) whether the snapshot carries the simulator's `LiveShapeFits` or not
    (then the policy counts the cluster itself, as the live loop does); the kept counts are
    really used, and the penalty really changes placements on this trace (against the plain
    `fgd` baseline), so the comparison can fail."""
    cluster, jobs = _small_trace(8)
    workload = workload_of(jobs)

    reads: list[int] = []

    def count_reads(sim: Simulator) -> None:
        reads.append(0)
        count_calls(sim.shape_fits, "counts", reads)

    def drop(sim: Simulator) -> None:
        sim.shape_fits = None

    kept, _ = replay(cluster, jobs, workload, setup=count_reads)
    counted_here, _ = replay(cluster, jobs, workload, setup=drop)
    assert reads[0] > 10
    assert kept == counted_here
    plain, _ = replay(cluster, jobs, workload, "fgd")
    places = [[(s.job_id, s.placements) for s in d.starts] for d in kept]
    assert places != [[(s.job_id, s.placements) for s in d.starts] for d in plain]
