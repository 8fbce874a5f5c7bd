"""The servers as numpy columns kept across a decision (scheduler/policy/fragment.py,
`ServerColumns`; used by the suanli policy's score-based placement, multifactor.py).

Invariants checked here:
- Told of every changed server, `ServerColumns.arrays(W)` holds the same rows and the same
  FGD tables as columns built afresh from the servers, through starts and ends of whole
  devices, shares and CPU; a `fork` over forked capacity indexes follows the fork's changes
  and leaves the producer's columns as they were.
- `choose_among` over the columns, with a job's accepted types as a row mask and a veto,
  chooses exactly what `choose` chooses over the list of the same servers (every strategy,
  ties by name or by a given rank, which the columns precompute).
- The simulator decides exactly the same with its kept columns in the snapshot and without
  them (the policy then builds its own, as the live loop does), and the kept ones are used;
  starts made in a decision before its first scored placement reach the decision's copy.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.policy import capacity, decide
from scheduler.policy.capacity import NodeCap, TypeCapacity
from scheduler.policy.fragment import ServerColumns, TaskShape, Workload, _allowed_rows, _Arrays, _fit_tables, _satisfied
from scheduler.policy.scoring import STRATEGIES, choose, choose_among
from scheduler.sim.engine import Simulator
from scheduler.sim.run import workload_of
from scheduler.types import NodeView, Resources
from tests.unit.policy_builders import NOW, make_job, make_node, make_snapshot
from tests.unit.test_scarcity import _small_trace, count_calls, replay
from tests.unit.test_scoring import clusters, requests, workloads

G2, G3 = "G2", "G3"
WORKLOAD = Workload((TaskShape(1000, 500, 1, (), 0.3), TaskShape(2000, 1000, 2, (G3,), 0.3),
                     TaskShape(24_000, 1000, 4, (), 0.2), TaskShape(1000, 250, 1, (G2,), 0.1),
                     TaskShape(500, 0, 0, (), 0.1)))


def _caps_of(nodes: list[NodeCap]) -> dict[str, TypeCapacity]:
    by_type: dict[str, list[NodeCap]] = {}
    for n in nodes:
        by_type.setdefault(n.type, []).append(NodeCap(n.name, n.type, n.rack, n.device_count, list(n.free), n.cpus,
                                                      n.memory_mb, dict(n.shared)))
    return {t: TypeCapacity(t, ns) for t, ns in by_type.items()}


def _rows(a: _Arrays) -> dict[str, tuple]:
    """Per server: cpu, memory, wholly free devices, device count, partly used (device, free)."""
    shares: dict[int, list[tuple[int, int]]] = {}
    for n, d, v in zip(a.sn.tolist(), a.sd.tolist(), a.sv.tolist()):
        shares.setdefault(n, []).append((d, v))
    counts = a.device_counts()
    return {a.nodes[i].name: (int(a.cpu[i]), int(a.mem[i]), int(a.nfree[i]), int(counts[i]), sorted(shares.get(i, [])))
            for i in range(len(a.nodes))}


def _assert_fresh(cols: ServerColumns, caps: dict[str, TypeCapacity], W) -> None:  # type: ignore[no-untyped-def]
    """The kept columns (and tables) equal columns built afresh from the servers now."""
    got = cols.arrays(W)
    nodes = [caps[got.nodes[i].type].nodes[got.nodes[i].name] for i in range(len(got.nodes))]
    assert all(x is y for x, y in zip(got.nodes, nodes))  # the current server objects (a fork copies them)
    fresh = _Arrays(nodes)
    assert _rows(got) == _rows(fresh)
    assert got.tables is not None and got.tables[0] is W
    cnt, fit = _fit_tables(fresh, W)
    hb = _satisfied(_allowed_rows(fresh, W), fresh.cpu, cnt, fit, W)
    _, kcnt, kfit, kallowed, khb = got.tables
    assert (kcnt == cnt).all() and (kfit == fit).all() and (khb == hb).all()
    assert (kallowed == _allowed_rows(fresh, W)).all()


def _random_change(rnd: random.Random, caps: dict[str, TypeCapacity], held: list) -> str | None:  # type: ignore[type-arg]
    """One start or end on `caps` (shares, whole devices, CPU); the server changed, if any."""
    if held and rnd.random() < 0.4:
        t, p, r = held.pop(rnd.randrange(len(held)))
        caps[t].give_back(p.node, p.devices, r.device_milli, r.cpus_per_node, r.memory_mb_per_node)
        return p.node
    t = rnd.choice(sorted(caps))
    r = rnd.choice([Resources((t,), 1, 1, 1000, 1024, rnd.choice([200, 500, 700])),
                    Resources((t,), rnd.choice([1, 2, 4]), 1, rnd.choice([1000, 8000]), 1024)])
    placed = caps[t].place(r)
    if placed is None:
        return None
    caps[t].take(placed, r)
    held.append((t, placed[0], r))
    return placed[0].node


def test_kept_columns_equal_fresh_ones_and_a_fork_leaves_the_producer_alone() -> None:
    rnd = random.Random(5)
    caps = capacity.build(tuple(NodeView(f"n{i:02d}", G2 if i % 3 else G3, 8, tuple(range(8)), 32_000, 1 << 20)
                                for i in range(15)))
    W = WORKLOAD._compiled  # type: ignore[attr-defined]
    cols = ServerColumns(caps)
    _assert_fresh(cols, caps, W)
    held: list = []  # type: ignore[type-arg]
    for step in range(120):
        name = _random_change(rnd, caps, held)
        if name is not None:
            cols.changed(name)
        if step % 4 == 0:  # several changes between reads, as several starts in a decision
            _assert_fresh(cols, caps, W)
    assert any(len(n.shared) for c in caps.values() for n in c.nodes.values())  # shares were exercised
    before = _rows(cols.arrays(W))

    forked = {t: c.fork() for t, c in caps.items()}
    copy = cols.fork(forked, W)
    fork_held = [h for h in held]
    for _ in range(40):
        name = _random_change(rnd, forked, fork_held)
        if name is not None:
            copy.changed(name)
    _assert_fresh(copy, forked, W)
    assert _rows(copy.arrays(W)) != before
    _assert_fresh(cols, caps, W)
    assert _rows(cols.arrays(W)) == before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=clusters(), r=requests(), w=workloads(), strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 3),
       types=st.sampled_from([("A",), ("B",), ("A", "B"), ("",), ("A", "B", "")]), vetoed=st.sets(st.integers(0, 6)),
       order=st.one_of(st.none(), st.permutations(range(7))))
def test_choose_among_the_columns_is_choose_over_the_same_servers(nodes: list[NodeCap], r: Resources, w: Workload,
                                                                  strategy: str, seed: int, types: tuple[str, ...],
                                                                  vetoed: set[int], order: list[int] | None) -> None:
    refused = {f"n{i}" for i in vetoed}
    rank = None if order is None else {f"n{i}": k for i, k in enumerate(order)}  # ties: smallest rank
    servers = [n for n in nodes if n.type in types and n.name not in refused]
    expected = choose(strategy, r, servers, w, seed, rank=rank)
    caps = _caps_of(nodes)
    cols = ServerColumns(caps, rank)
    W = w._compiled if strategy == "fgd" else None  # type: ignore[attr-defined]
    got = choose_among(strategy, r, cols.arrays(W), w, seed, rank=rank, rows=cols.rows_of(types),
                       veto=(lambda n: n.name in refused) if refused else None)
    if expected is None:
        assert got is None
    else:
        assert got is not None and (got[0].name, got[1]) == (expected[0].name, expected[1])


def test_the_simulator_decides_the_same_with_and_without_its_kept_columns() -> None:
    cluster, jobs = _small_trace(11)
    workload = workload_of(jobs)
    forks: list[int] = []

    def count_forks(sim: Simulator) -> None:
        forks.append(0)
        count_calls(sim.columns, "fork", forks)

    def drop(sim: Simulator) -> None:
        sim.columns = None

    kept, _ = replay(cluster, jobs, workload, setup=count_forks)
    built_here, _ = replay(cluster, jobs, workload, setup=drop)
    assert forks[0] > 10
    assert kept == built_here
    assert sum(len(d.starts) for d in kept) > 100


def test_starts_before_the_first_scored_placement_reach_the_producers_columns() -> None:
    """A gang (placed by the capacity index, not scored) starts before a one-server job is
    scored in the same decision: the decision's copy of the producer's columns must see the
    gang's servers as taken, or the one-server job would be given the gang's devices. With
    the producer's columns the decision is exactly the one made without them."""
    views = tuple(make_node(f"s{i}", count=8, cpus=64) for i in range(3))
    pending = [make_job(1, devices=8, nodes=2, t=0), make_job(2, devices=6, t=1), make_job(3, devices=2, t=2)]
    caps = capacity.build(views)
    snap = make_snapshot([], pending, capacity=caps, workload=WORKLOAD, columns=ServerColumns(caps))
    with_cols = decide(snap, NOW)
    without = decide(replace(snap, columns=None), NOW)
    assert with_cols == without
    taken = [(p.node, d) for s in with_cols.starts for p in s.placements for d in p.devices]
    assert len(taken) == len(set(taken)) == 8 * 2 + 6 + 2
