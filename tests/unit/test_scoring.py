"""Node-selection strategies of the FGD paper (scheduler/policy/scoring.py).

Invariants checked here:
- `choose` never returns a server or device that does not fit the request, returns None exactly
  when no candidate fits, gives the same answer for the same inputs, and does not depend on
  the order of the candidates (ties go to the smallest rank / name).
- `fragmentation` is the FGD measure of the reference simulator (pkg/utils/frag.go): for each
  task shape, all free GPU share of the node if the shape cannot run there, else the devices
  whose free share is below the shape's per-device share, weighted by popularity.
- FGD scores equal a direct, slow transcription of the reference (per-device loop, sigmoid,
  truncation), including the device a fractional pod is given.
- Hand-checked scores for every strategy, as computed by the reference's formulas.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.policy.capacity import NodeCap
from scheduler.policy.fragment import TaskShape, Workload, cluster_fragmentation, fragmentation, fragmentations
from scheduler.policy.scoring import (
    STRATEGIES,
    affinity_tag,
    choose,
    node_scores,
)
from scheduler.types import Resources


def cap(name: str, type_: str = "G2", count: int = 8, free: list[int] | None = None, cpus: int = 96_000,
        mem: int = 1 << 20, shared: dict[int, int] | None = None) -> NodeCap:
    return NodeCap(name, type_, "", count, list(range(count)) if free is None else list(free), cpus, mem, dict(shared or {}))


def req(devices: int = 1, milli: int = 1000, cpus: int = 4000, mem: int = 1024) -> Resources:
    return Resources(("G2",), devices, 1, cpus, mem, milli)


def shape(cpu: int, milli: int, num: int, weight: float, types: tuple[str, ...] = ()) -> TaskShape:
    return TaskShape(cpu, milli, num, types, weight)


# ---------------------------------------------------------------------------- a slow reference


def left_list(node: NodeCap) -> list[int]:
    """Free thousandths per device index, as the reference's MilliGpuLeftList."""
    return [1000 if d in node.free else max(node.shared.get(d, 0), 0) for d in range(node.device_count)]


def ref_frag(left: list[int], cpu: int, type_: str, shapes: tuple[TaskShape, ...]) -> float:
    """NodeGpuShareFragAmountScore, transcribed shape by shape (thousandths)."""
    total_left = sum(left)
    out = 0.0
    for s in shapes:
        if s.gpu_milli == 0 or s.num_gpu == 0:
            f = total_left  # a CPU-only task cannot use any GPU
        elif s.types and (not type_ or type_ not in s.types):
            f = total_left  # no access
        elif sum(1 for x in left if x >= s.gpu_milli) >= s.num_gpu and cpu >= s.cpu_milli:
            f = sum(x for x in left if x < s.gpu_milli)  # Q3: only too-small devices are fragment
        else:
            f = total_left  # lacks GPU and/or CPU
        out += s.weight * f
    return out


def ref_fgd(node: NodeCap, r: Resources, w: Workload) -> tuple[int, tuple[int, ...]]:
    """calculateGpuShareFragExtendScore: (score, devices)."""
    left = left_list(node)
    before = ref_frag(left, node.cpus, node.type, w.shapes)

    def score(new_left: list[int]) -> int:
        after = ref_frag(new_left, node.cpus - r.cpus_per_node, node.type, w.shapes)
        return int(1.0 / (1.0 + math.exp(-(before - after) / 1000)) * 100)

    if r.devices_per_node == 1 and r.device_milli < 1000:
        best: tuple[int, int] | None = None
        for i, x in enumerate(left):
            if x >= r.device_milli:
                new = list(left)
                new[i] -= r.device_milli
                s = score(new)
                if best is None or s > best[0]:
                    best = (s, i)
        assert best is not None
        return best[0], (best[1],)
    devs = tuple(sorted(node.free)[: r.devices_per_node])
    new = list(left)
    for d in devs:
        new[d] = 0
    return score(new), devs


def fits(node: NodeCap, r: Resources) -> bool:
    if node.cpus < r.cpus_per_node or node.memory_mb < r.memory_mb_per_node:
        return False
    if r.devices_per_node == 0:
        return True
    if r.device_milli < 1000:
        return bool(node.free) or any(v >= r.device_milli for v in node.shared.values())
    return len(node.free) >= r.devices_per_node


def devices_fit(node: NodeCap, r: Resources, devs: tuple[int, ...]) -> bool:
    if r.devices_per_node == 0:
        return devs == ()
    if r.device_milli < 1000:
        (d,) = devs
        return d in node.free or node.shared.get(d, 0) >= r.device_milli
    return len(devs) == r.devices_per_node == len(set(devs)) and set(devs) <= set(node.free)


# ---------------------------------------------------------------------------- fragmentation


def test_fragmentation_worked_example() -> None:
    """A 4-device node, devices 0-1 wholly free, device 2 with 500 and device 3 with 200
    thousandths left, 8 cores free. Target workload (popularity):
      m1 1 GPU x 1000, 4 cores (0.4): runs; only devices below 1000 are fragment: 500+200 = 700
      m2 1 GPU x 500, 2 cores  (0.3): runs; only device 3 (200 < 500) is fragment       = 200
      m3 1 GPU x 250, 16 cores (0.1): lacks CPU -> all 2700 free thousandths
      m4 4 GPU x 1000, 1 core  (0.1): only 2 whole devices -> all 2700
      m5 CPU-only, 1 core      (0.1): no GPU use -> all 2700
    F = 0.4*700 + 0.3*200 + 0.3*2700 = 1150 thousandths = 1.15 GPUs."""
    w = Workload((shape(4000, 1000, 1, 0.4), shape(2000, 500, 1, 0.3), shape(16000, 250, 1, 0.1),
                  shape(1000, 1000, 4, 0.1), shape(1000, 0, 0, 0.1)))
    node = cap("n", count=4, free=[0, 1], cpus=8000, shared={2: 500, 3: 200})
    assert fragmentation(node, w) == pytest.approx(1.15)
    # Idle, the node has no fragment for the tasks that fit (m1, m2, now m4 too), all 4 GPUs
    # for those that cannot run there (m3 lacks CPU, m5 uses no GPU): 0.1*4 + 0.1*4.
    assert fragmentation(cap("idle", count=4, cpus=8000), w) == pytest.approx(0.8)
    assert fragmentation(cap("full", count=4, free=[], cpus=8000), w) == 0.0


def test_fragmentation_counts_type_restricted_tasks() -> None:
    """A task that may only run on T4 sees every free GPU of a G2 node as fragment."""
    w = Workload((shape(1000, 1000, 1, 0.5, ("T4",)), shape(1000, 1000, 1, 0.5)))
    assert fragmentation(cap("g2", "G2", count=2), w) == pytest.approx(1.0)  # 0.5 * 2 GPUs
    assert fragmentation(cap("t4", "T4", count=2), w) == 0.0
    assert fragmentation(cap("cpu", "", count=0), w) == 0.0
    assert cluster_fragmentation([cap("g2", "G2", count=2), cap("t4", "T4", count=2)], w) == pytest.approx(1.0)


def test_from_requests_popularity_and_cut() -> None:
    """Identical requests are counted; the most popular kept until they cover the threshold;
    weights renormalised over what is kept; CPU-only requests have gpu_milli 0."""
    reqs = [(4000, 1000, 1, ())] * 6 + [(2000, 500, 1, ("T4", ""))] * 3 + [(1000, 0, 0, ("T4",))]
    w = Workload.from_requests(reqs)
    assert [(s.cpu_milli, s.gpu_milli, s.num_gpu, s.types) for s in w.shapes] == [
        (4000, 1000, 1, ()), (2000, 500, 1, ("T4",)), (1000, 0, 0, ())]
    assert [s.weight for s in w.shapes] == pytest.approx([0.6, 0.3, 0.1])
    cut = Workload.from_requests(reqs, threshold=0.9)  # 6 + 3 >= 9: the CPU-only shape is dropped
    assert [s.weight for s in cut.shapes] == pytest.approx([6 / 9, 3 / 9])
    # Equal counts: the larger CPU request ranks first (the reference's reversed Less).
    tie = Workload.from_requests([(1000, 1000, 1, ()), (2000, 1000, 1, ())])
    assert [s.cpu_milli for s in tie.shapes] == [2000, 1000]
    assert Workload.from_requests([]).shapes == ()


# ---------------------------------------------------------------------------- strategies by hand


def test_bestfit_and_packing_disagree() -> None:
    """A: 8-GPU server, one device in use, 96 cores. B: idle 2-GPU server with 8 cores.
    1 GPU + 4 cores. BestFit (raw): A 1-(0.5*92000/128000+0.5*6000/8000) -> 26; B 1-(0.5*4000/
    128000+0.5*1000/8000) -> 92, normalised to 0 and 100: B. Packing: A is in use and needs one
    whole device -> 50-1 = 49; B is idle -> 33-2 = 31: A."""
    a = cap("a", count=8, free=list(range(1, 8)), cpus=96_000)
    b = cap("b", "G2", count=2, cpus=8000)
    r = req(1, cpus=4000)
    assert node_scores("bestfit", r, [a, b]) == {"a": 0, "b": 100}
    assert node_scores("packing", r, [a, b]) == {"a": 49, "b": 31}
    assert choose("bestfit", r, [a, b], None) == (b, (0,))
    assert choose("packing", r, [a, b], None) == (a, (1,))


def test_packing_score_cases() -> None:
    """Idle server: 33 - free devices; share on a partly used device with 300 left:
    100 - (300*100//1000)//10 = 97; share that needs a whole device on a used server: 49;
    two whole devices on a used server: 48; CPU-only: 0 everywhere."""
    idle = cap("idle", count=8)
    part = cap("part", count=4, free=[0, 1], shared={2: 300})
    assert node_scores("packing", req(1), [idle])["idle"] == 25
    assert node_scores("packing", req(1, 250), [part])["part"] == 97
    assert node_scores("packing", req(1, 500), [part])["part"] == 49
    assert node_scores("packing", req(2), [part])["part"] == 48
    assert node_scores("packing", req(0), [idle, part]) == {"idle": 0, "part": 0}


def test_dotprod_and_clustering_scores() -> None:
    """DotProd (merge, max): 100*(1 - (cpu_free*cpu_req/128000^2 + gpu_free*gpu_req/8000^2)/2),
    truncated: idle 8-GPU/96-core server, 1 GPU + 32 cores -> 100*(1-(0.1875+0.125)/2) = 84.375
    -> 84. Clustering: 25*(8000-free)//8000 plus 75 (only this tag on the server), 50 (with
    others), 25 (no GPU pod), 0 (other tags only)."""
    idle = cap("idle", count=8, cpus=96_000)
    assert node_scores("dotprod", req(1, cpus=32_000), [idle]) == {"idle": 84}
    nodes = [cap("same", count=8, free=list(range(4, 8))), cap("mixed", count=8, free=list(range(4, 8))),
             cap("none", count=8), cap("other", count=8, free=list(range(4, 8)))]
    aff = {"same": {"1-gpu": 2}, "mixed": {"1-gpu": 1, "share-gpu": 3}, "other": ["2-gpu"]}
    assert affinity_tag(req(1)) == "1-gpu" and affinity_tag(req(1, 500)) == "share-gpu" and affinity_tag(req(0)) is None
    assert node_scores("clustering", req(1), nodes, affinity=aff) == {"same": 87, "mixed": 62, "none": 25, "other": 12}
    assert choose("clustering", req(1), nodes, None, affinity=aff)[0].name == "same"
    assert node_scores("clustering", req(0), nodes, affinity=aff) == dict.fromkeys(["same", "mixed", "none", "other"], 0)


def test_fgd_prefers_least_fragmentation_growth() -> None:
    """Workload: half 1-GPU tasks, half 0.5-GPU tasks. A 0.5 share on A's half-used device
    makes A whole again (its fragment 0.25 GPU -> 0: score trunc(100*sigmoid(0.25)) = 56); on
    idle B it leaves a half device that 1-GPU tasks cannot use (0 -> 0.25: 43). FGD takes A,
    device 0, which is also where the fragment measure grows least."""
    w = Workload((shape(1000, 1000, 1, 0.5), shape(1000, 500, 1, 0.5)))
    a = cap("a", count=2, free=[1], shared={0: 500})
    b = cap("b", count=2)
    r = req(1, 500, cpus=1000)
    assert fragmentation(a, w) == pytest.approx(0.25) and fragmentation(b, w) == 0.0
    assert node_scores("fgd", r, [a, b], w) == {"a": 56, "b": 43}
    assert choose("fgd", r, [b, a], w) == (a, (0,))
    after_a = cap("a", count=2, free=[1], cpus=a.cpus - 1000)
    after_b = cap("b", count=2, free=[1], cpus=b.cpus - 1000, shared={0: 500})
    assert fragmentation(after_a, w) - fragmentation(a, w) < fragmentation(after_b, w) - fragmentation(b, w)


def test_fractional_pod_goes_to_the_reference_device() -> None:
    """Node: device 0 has 600 left, device 1 has 700, device 2 is free; workload: 0.5-GPU tasks.
    A 0.2 share: on device 0 it leaves 400 < 500 (fragment 0.4 GPU, score 40); on device 1
    (500) or 2 (800) nothing is lost (50). FGD picks the lowest of the best: device 1. The
    other strategies use the reference's "best" GPU selection: least free share that fits,
    lowest index on ties -> device 0; `random` takes any fitting device."""
    w = Workload((shape(1000, 500, 1, 1.0),))
    node = cap("n", count=3, free=[2], shared={0: 600, 1: 700})
    r = req(1, 200, cpus=1000)
    assert ref_fgd(node, r, w) == (50, (1,))
    assert choose("fgd", r, [node], w) == (node, (1,))
    for s in ("bestfit", "packing", "dotprod", "clustering"):
        assert choose(s, r, [node], w) == (node, (0,))
    assert choose("bestfit", req(1, 650, cpus=1000), [node], None) == (node, (1,))
    assert choose("bestfit", req(1, 800, cpus=1000), [node], None) == (node, (2,))
    tied = cap("t", count=6, free=[0, 2], shared={1: 400, 3: 300, 5: 300})
    assert choose("bestfit", req(1, 300), [tied], None) == (tied, (3,))
    assert choose("random", r, [node], None, seed=1)[1][0] in (0, 1, 2)


def test_cpu_only_pods() -> None:
    """No devices are returned. Workload: 1-GPU tasks needing 8 cores. Putting 4 cores on A
    (10 cores free, one idle GPU) strands its GPU (fragment +1 GPU, score 26); B (64 cores)
    loses nothing (50): FGD takes B. BestFit takes A (least free left); Packing scores both 0
    and breaks the tie by name."""
    w = Workload((shape(8000, 1000, 1, 1.0),))
    a = cap("a", count=1, cpus=10_000)
    b = cap("b", count=1, cpus=64_000)
    r = req(0, cpus=4000)
    assert node_scores("fgd", r, [a, b], w) == {"a": 26, "b": 50}
    assert choose("fgd", r, [a, b], w) == (b, ())
    assert choose("bestfit", r, [b, a], None) == (a, ())
    assert choose("packing", r, [b, a], None) == (a, ())
    assert choose("packing", r, [b, a], None, rank={"a": 1, "b": 0}) == (b, ())
    cpu_node = cap("c", "", count=0, cpus=64_000)
    assert choose("fgd", r, [cpu_node], w) == (cpu_node, ())
    assert choose("fgd", req(1), [cpu_node], w) is None


def test_fgd_keeps_type_restricted_capacity() -> None:
    """Half the tasks need 2 T4 GPUs, half take 1 GPU of any type. A 1-GPU pod of any type
    on the idle T4 server leaves one T4 that the T4 pairs cannot use (fragment +0.5 GPU,
    score 37); on the G2 server the T4-only half never had access, so taking a G2 GPU removes
    0.5 GPU of fragment (62). FGD takes G2."""
    w = Workload((shape(1000, 1000, 2, 0.5, ("T4",)), shape(1000, 1000, 1, 0.5)))
    t4, g2 = cap("t4", "T4", count=2), cap("g2", "G2", count=2)
    r = Resources((), 1, 1, 1000, 1024, 1000)
    assert node_scores("fgd", r, [t4, g2], w) == {"t4": 37, "g2": 62}
    assert choose("fgd", r, [t4, g2], w) == (g2, (0,))


def test_nothing_fits_and_memory() -> None:
    a = cap("a", count=2, free=[1], mem=2048)
    assert choose("fgd", req(2), [a], Workload(())) is None
    assert choose("bestfit", req(1, mem=4096), [a], None) is None
    assert choose("bestfit", req(1, mem=2048), [a], None) == (a, (1,))
    assert choose("random", req(1, 500), [cap("b", count=1, free=[], shared={0: 400})], None) is None
    assert choose("bestfit", req(1), [], None) is None
    with pytest.raises(ValueError):
        choose("fgd", req(1), [a], None)
    with pytest.raises(ValueError):
        choose("nope", req(1), [a], None)
    with pytest.raises(ValueError):
        choose("bestfit", Resources(("G2",), 1, 2), [a], None)


def test_ties_go_to_rank_then_name() -> None:
    nodes = [cap(n, count=2) for n in ("n3", "n1", "n2")]
    assert choose("packing", req(1), nodes, None)[0].name == "n1"
    assert choose("packing", req(1), nodes, None, rank={"n1": 2, "n2": 0, "n3": 1})[0].name == "n2"


# ---------------------------------------------------------------------------- properties

SHARES = [100, 250, 300, 500, 700, 999]


@st.composite
def clusters(draw):  # type: ignore[no-untyped-def]
    nodes = []
    for i in range(draw(st.integers(1, 7))):
        count = draw(st.sampled_from([0, 1, 2, 4, 8]))
        states = draw(st.lists(st.sampled_from(["free", "used", "shared"]), min_size=count, max_size=count))
        free = [d for d, s in enumerate(states) if s == "free"]
        shared = {d: draw(st.sampled_from(SHARES)) for d, s in enumerate(states) if s == "shared"}
        type_ = draw(st.sampled_from(["A", "B"])) if count else ""
        nodes.append(NodeCap(f"n{i}", type_, "", count, free, draw(st.sampled_from([0, 2000, 8000, 32_000, 96_000])),
                             draw(st.sampled_from([0, 1024, 65_536])), shared))
    return nodes


@st.composite
def requests(draw):  # type: ignore[no-untyped-def]
    devices = draw(st.sampled_from([0, 1, 1, 1, 2, 4, 8]))
    milli = draw(st.sampled_from([1000, 100, 250, 500, 700])) if devices == 1 else 1000
    return Resources(("A",), devices, 1, draw(st.sampled_from([0, 1000, 4000, 16_000])), draw(st.sampled_from([0, 1024, 4096])), milli)


@st.composite
def workloads(draw):  # type: ignore[no-untyped-def]
    """Weights are multiples of 1/16, so every sum is exact and the vectorised scores can be
    compared bit for bit with the slow reference."""
    shapes = []
    for _ in range(draw(st.integers(0, 6))):
        num, milli = draw(st.sampled_from([(0, 0), (1, 1000), (1, 500), (1, 250), (1, 700), (2, 1000), (4, 1000)]))
        shapes.append(TaskShape(draw(st.sampled_from([0, 1000, 4000, 16_000])), milli, num,
                                draw(st.sampled_from([(), ("A",), ("B",), ("A", "B")])), draw(st.integers(1, 8)) / 16))
    return Workload(tuple(shapes))


def _snapshot(nodes: list[NodeCap]) -> list[tuple]:
    return [(n.name, n.type, n.device_count, tuple(n.free), n.cpus, n.memory_mb, tuple(sorted(n.shared.items()))) for n in nodes]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=clusters(), r=requests(), w=workloads(), strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 3),
       shuffle=st.randoms(use_true_random=False))
def test_choose_properties(nodes: list[NodeCap], r: Resources, w: Workload, strategy: str, seed: int,
                           shuffle: random.Random) -> None:
    """Fits, None iff nothing fits, deterministic, order-independent, inputs untouched."""
    before = _snapshot(nodes)
    got = choose(strategy, r, nodes, w, seed)
    assert _snapshot(nodes) == before
    if got is None:
        assert not any(fits(n, r) for n in nodes)
        return
    node, devs = got
    assert any(node is n for n in nodes)
    assert fits(node, r) and devices_fit(node, r, devs)
    again = choose(strategy, r, list(nodes), w, seed)
    assert again is not None and again[0] is node and again[1] == devs
    shuffled = list(nodes)
    shuffle.shuffle(shuffled)
    other = choose(strategy, r, shuffled, w, seed)
    assert other is not None and other[0].name == node.name and other[1] == devs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=clusters(), r=requests(), w=workloads())
def test_fgd_matches_the_slow_reference(nodes: list[NodeCap], r: Resources, w: Workload) -> None:
    """Vectorised FGD == a per-node, per-device transcription of the reference: the node
    scores, the chosen server (best score, then smallest name) and its devices; and the
    fragment measure of every node."""
    feasible = [n for n in nodes if fits(n, r)]
    expected = {n.name: ref_fgd(n, r, w) for n in feasible}
    assert node_scores("fgd", r, nodes, w) == {k: v[0] for k, v in expected.items()}
    got = choose("fgd", r, nodes, w)
    if not feasible:
        assert got is None
    else:
        best = max(v[0] for v in expected.values())
        name = min(k for k, v in expected.items() if v[0] == best)
        assert got is not None and got[0].name == name and got[1] == expected[name][1]
    frag = fragmentations(nodes, w)
    assert frag.tolist() == [ref_frag(left_list(n), n.cpus, n.type, w.shapes) / 1000 for n in nodes]


def test_random_spreads_and_is_seeded() -> None:
    """`random` draws uniformly among fitting servers from the given seed/Generator."""
    nodes = [cap(f"n{i}", count=2) for i in range(5)] + [cap("tiny", count=2, cpus=0)]
    picks = {choose("random", req(1), nodes, None, seed=s)[0].name for s in range(60)}
    assert picks == {f"n{i}" for i in range(5)}
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
    seq1 = [choose("random", req(1), nodes, None, rng1)[0].name for _ in range(10)]
    seq2 = [choose("random", req(1), nodes, None, rng2)[0].name for _ in range(10)]
    assert seq1 == seq2
