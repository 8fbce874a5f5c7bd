"""First-fit FIFO `decide()`: table tests with builders, and properties over random snapshots."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy.fifo import decide
from scheduler.types import JobRequest, NodeView, Resources, Snapshot, WaitCode

A100, B910 = "nvidia-a100-80g", "ascend-910b"


def make_node(name: str, type_: str = A100, count: int = 8, used: tuple[int, ...] = (), cpus: int = 64,
              mem: int = 1 << 20, schedulable: bool = True) -> NodeView:
    return NodeView(name, type_, count, tuple(i for i in range(count) if i not in used), cpus, mem, schedulable)


def make_job(id: int, devices: int = 1, nodes: int = 1, types: tuple[str, ...] = (A100,), t: float | None = None,
             cpus: int = 1, mem: int = 1024, org: str = "o") -> JobRequest:
    return JobRequest(id, org, Resources(types, devices, nodes, cpus, mem), float(id if t is None else t), 3600)


def make_snapshot(nodes: list[NodeView], jobs: list[JobRequest]) -> Snapshot:
    return Snapshot(tuple(nodes), tuple(jobs))


def test_single_job_gets_lowest_free_devices_of_first_node() -> None:
    """Invariant: first fit takes servers in name order and the lowest free device indices."""
    d = decide(make_snapshot([make_node("b"), make_node("a", used=(0, 2))], [make_job(1, devices=2)]), 0)
    assert [(p.node, p.devices) for p in d.starts[0].placements] == [("a", (1, 3))]
    assert d.starts[0].accelerator_type == A100 and not d.waits


def test_submit_order_not_list_order() -> None:
    """Invariant: earlier-submitted jobs are placed first even if listed later."""
    jobs = [make_job(2, devices=8, t=5), make_job(1, devices=8, t=1)]
    d = decide(make_snapshot([make_node("a")], jobs), 0)
    assert [s.job_id for s in d.starts] == [1] and [w.job_id for w in d.waits] == [2]
    assert d.waits[0].code is WaitCode.NO_CAPACITY_NOW


def test_later_small_job_may_start_when_earlier_big_job_does_not_fit() -> None:
    """Invariant: first fit does not block: a later job that fits starts (no reservation yet)."""
    d = decide(make_snapshot([make_node("a", used=(0, 1, 2, 3))], [make_job(1, devices=8), make_job(2, devices=2)]), 0)
    assert [s.job_id for s in d.starts] == [2]


def test_gang_gets_all_nodes_or_none() -> None:
    """Invariant: a 2-node job starts on two distinct servers, or not at all."""
    two = decide(make_snapshot([make_node("a"), make_node("b")], [make_job(1, devices=8, nodes=2)]), 0)
    assert sorted(p.node for p in two.starts[0].placements) == ["a", "b"]
    one = decide(make_snapshot([make_node("a"), make_node("b", used=(0,))], [make_job(1, devices=8, nodes=2)]), 0)
    assert not one.starts and one.waits[0].code is WaitCode.NO_CAPACITY_NOW


def test_acceptable_types_in_order_of_preference() -> None:
    """Invariant: the first acceptable type that fits is used; a type not accepted never is."""
    nodes = [make_node("a", A100, used=tuple(range(8))), make_node("n", B910)]
    d = decide(make_snapshot(nodes, [make_job(1, types=(A100, B910)), make_job(2, types=(A100,))]), 0)
    assert [(s.job_id, s.accelerator_type) for s in d.starts] == [(1, B910)]
    assert [w.job_id for w in d.waits] == [2]


def test_never_fits_is_told_apart_from_busy() -> None:
    """Invariant: a job no schedulable server could ever hold says so (code never_fits)."""
    d = decide(make_snapshot([make_node("a"), make_node("b", schedulable=False)], [make_job(1, devices=8, nodes=2)]), 0)
    assert d.waits[0].code is WaitCode.NEVER_FITS and "cannot fit" in d.waits[0].reason


def test_cpu_and_memory_are_respected() -> None:
    """Invariant: a server without the CPUs or memory asked is not used."""
    d = decide(make_snapshot([make_node("a", cpus=2), make_node("b", mem=100)], [make_job(1, cpus=4, mem=200)]), 0)
    assert not d.starts
    d = decide(make_snapshot([make_node("a", cpus=2), make_node("b", mem=100)], [make_job(1, cpus=1, mem=50)]), 0)
    assert d.starts[0].placements[0].node == "a"


# ---------------------------------------------------------------------------- properties

nodes_st = st.lists(
    st.builds(
        lambda i, t, n, used: make_node(f"n{i:02d}", t, n, tuple(u for u in used if u < n)),
        st.integers(0, 99), st.sampled_from([A100, B910]), st.integers(1, 8),
        st.lists(st.integers(0, 7), max_size=8),
    ),
    min_size=1, max_size=8, unique_by=lambda n: n.name,
)
jobs_st = st.lists(
    st.builds(
        lambda i, d, n, types, t: make_job(i, d, n, types, t),
        st.integers(1, 10_000), st.integers(1, 8), st.integers(1, 3),
        st.sampled_from([(A100,), (B910,), (A100, B910), (B910, A100)]), st.integers(0, 50),
    ),
    max_size=30, unique_by=lambda j: j.id,
)


@settings(max_examples=300, deadline=None)
@given(nodes_st, jobs_st)
def test_properties_over_random_snapshots(nodes: list[NodeView], jobs: list[JobRequest]) -> None:
    """Invariants: no device is given twice or given while in use; a gang job gets exactly
    `nodes` distinct servers with `devices_per_node` each; only accepted types are used;
    every job is either started or waiting, once; decide() is deterministic."""
    snap = make_snapshot(nodes, jobs)
    d = decide(snap, 123.0)
    by_name = {n.name: n for n in nodes}
    given_devices: Counter[tuple[str, int]] = Counter()
    jobs_by_id = {j.id: j for j in jobs}
    for s in d.starts:
        job = jobs_by_id[s.job_id]
        assert s.accelerator_type in job.resources.accelerator_types
        assert len(s.placements) == job.resources.nodes
        assert len({p.node for p in s.placements}) == job.resources.nodes
        for p in s.placements:
            node = by_name[p.node]
            assert node.accelerator_type == s.accelerator_type
            assert len(p.devices) == job.resources.devices_per_node
            for dev in p.devices:
                assert dev in node.free_devices
                given_devices[(p.node, dev)] += 1
    assert all(c == 1 for c in given_devices.values())
    decided = [s.job_id for s in d.starts] + [w.job_id for w in d.waits]
    assert sorted(decided) == sorted(jobs_by_id)
    assert decide(snap, 123.0) == d
