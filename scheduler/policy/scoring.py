"""Node-selection strategies compared in the FGD paper ("Beware of Fragmentation", ATC'23).

Reimplemented (no code copied) from the authors' simulator, hkust-adsl/kubernetes-scheduler-
simulator (Apache-2.0), as configured by its `experiments/run_scripts/generate_run_scripts.py`:
every policy is one score plugin of weight 1000 behind kube-scheduler's filters; the GPU of a
fractional pod is picked by the `Open-Gpu-Share` reserve step. `choose(strategy, r, candidates,
workload, seed)` returns the server and device indices for one single-server request, or None.

Units: CPU in milli-cores (`r.cpus_per_node` and `NodeCap.cpus` are compared directly; the
score formulas normalise by the reference's `MaxSpecCpu` = 128,000), memory in MiB, GPU in
thousandths (a wholly free device counts 1000; `NodeCap.shared` holds the free thousandths of
partly used devices; any other device is fully used).

Filter (all strategies, = kube NodeResourcesFit + Open-Gpu-Share `Filter`): enough CPU and
memory, and for a request of k whole devices k wholly free ones, for a share of `device_milli`
< 1000 one device whose free share is >= it; CPU-only requests need no device. Candidates are
assumed already filtered by accelerator type (the request's `gpu_spec`).

Semantics (score plugin file in `pkg/simulator/plugin/`; higher wins; scores are the plugin's
int64 values, so Go's truncation and the ties it creates are kept):
- `bestfit` (best_fit_score.go): s = (1 - [0.5 (cpu_free - cpu_req)/128000 + 0.5 (gpu_free -
  gpu_req)/8000]) * 100, truncated, gpu_free = all free thousandths of the server; then the
  plugin's min-max NormalizeScore to 0..100 with integer division (plugin_utils.go).
- `packing` (gpu_packing_score.go): CPU-only request -> 0 everywhere. A server whose devices
  are all free -> max(33 - free, free). Else devices are taken smallest free share first:
  if a wholly free device is needed -> max(50 - wholly free used, 33); else (a share fits on a
  partly used device) -> max(100 - (left*100 // 1000) // 10, 50).
- `fgd` (fgd_score.go + pkg/utils/frag.go): score = trunc(100 * sigmoid((F_before -
  F_after)/1000)), F the node's fragmentation (below, in thousandths). Whole devices are
  subtracted from the lowest-index wholly free devices; for a share every device that fits is
  tried and the best score wins (lowest index on ties), which is also the device it gets.
- `dotprod` (dot_product_score.go with dimExt "merge", norm "max", as in the paper's runs):
  s = 1 - (cpu_free*cpu_req/128000^2 + gpu_free*gpu_req/8000^2)/2, score = trunc(100 s).
  (The reference ranks the *smallest* dot product first; kept as is.)
- `clustering` (gpu_clustering_score.go): tag = "share-gpu" or "<k>-gpu"; base = 25 * (8000 -
  gpu_free) // 8000 plus 75 if the server only runs pods of this tag, 50 if it runs this tag
  among others, 25 if it runs no GPU pod, 0 otherwise; CPU-only request -> 0. The tags on a
  server come from `affinity` (node name -> tags of its GPU pods; see `affinity_tag`); without
  it they are inferred from what NodeCap shows ("share-gpu" if a device is partly used,
  "unknown" if one is wholly used), which is only an approximation.
- `random` (random_score.go): a uniformly random server among those that fit.
Device choice on the chosen server: whole devices -> the lowest-index wholly free ones
(AllocateExclusiveGpuId); a share -> `fgd`: as above; `random`: uniform among the devices that
fit (open_gpu_share.go, gpuSelMethod "random"); the others: the fitting device with the least
free share, lowest index on ties (gpuSelMethod "best").

Fragmentation (pkg/utils/frag.go, NodeGpuShareFragAmountScore; the paper's F_n(M)): for a
task shape m with popularity p_m, a node's free GPU thousandths G are all fragment when m
cannot run there (no GPU asked, type not allowed, too few devices with >= m's per-device
share, or too little CPU); when m can run, only the devices whose free share is below m's
per-device share are fragment. F_n = sum_m p_m * frag_n(m). `fragmentation` returns F_n in GPUs.

Ties: the authors patched kube-scheduler's selectHost (vendor/k8s.io/kubernetes/pkg/scheduler/
core/generic_scheduler.go) to take the lexicographically smallest node name among the best
scores, "for reproducibility", and their simulator prefixes every node name with a random
4-digit rank (rand.Perm seeded by the run's seed, pkg/simulator/simulator.go) — so ties go to a
random but fixed-per-run node order. Here ties go to the smallest `rank[name]` when `rank` is
given (pass a seeded permutation per run to match the reference), else to the smallest name;
either way the result does not depend on the order of `candidates`. Ties are frequent (scores
are small integers): e.g. `packing` and `clustering` score every server 0 for a CPU-only pod,
so such pods fill the first-ranked server first. `seed` (an int or a numpy Generator; pass one
Generator per run, an int seed draws the same number every call) is used by `random` only.

Vectorisation (FGD, the hot path): one pass over the candidates pulls cpu, memory, the number
of wholly free devices and the flattened (node, value, device) list of partly used devices into
numpy arrays. For each distinct per-device share g of the workload's GPU shapes (U thresholds)
two N x U tables give, per node, the devices with free >= g and their free thousandths
(wholly free devices add 1000 each; partly used ones are added with one `bincount`). A node's
non-fragment ("satisfied") amount for shape m is H[n, m] = sat[n, m] * fit_sum[n, g_m], with
sat = type allowed & cpu >= c_m & fit_count >= k_m, so F = P*G - H @ p. The after-placement
tables follow from the before tables in O(1) per entry: k whole devices take k from every
fit count and 1000k from every fit sum; a CPU-only pod only lowers cpu; a share of s on a
device with free v swaps that device's terms (v >= g, v) for (v-s >= g, v-s) — one row for
a node's wholly free devices (they are all alike) plus one per partly used device that fits. The score uses F_before - F_after = dG*P - (H_before - H_after) @ p, integers up to
the last product, so an unchanged node scores exactly 50. Per call this is a handful of
(N x ~30) array operations; the per-type "allowed" rows are cached on the Workload.

Scarcity penalty (the suanli policy's placement: `choose("fgd", ..., scarcity=...)`; `fgd`
without it is the paper's, unchanged). FGD only sees the server it scores, so taking the
last server where a rare shape fits costs no more than taking one of a hundred. Penalised:

    score(n) = FGD score(n) - 100 * lambda * sum_m p_m * [m fits on n now, not after] / C_m

C_m = servers of the *whole cluster* (every type) where GPU shape m fits now (`scarcity.ShapeFits`,
updated per placement; "fits" as in F: type, CPU, devices with enough free share); lambda =
`SCARCITY_WEIGHT` = 20. Losing the last server of m costs 2000 * p_m points (FGD's whole
0..100 range at p_m = 0.05); a shape on 100 servers costs 20 * p_m per server lost, mostly
below FGD's integer steps, so FGD still decides among common shapes. Lambda on the Alibaba
v2023 trace, fgd mode, seeds 42-43 (FGD 4.65 % unallocated): 4.55 (1), 4.47 (5), 4.34 (20),
4.43 (50), 4.48 (100), 4.66 (500), 5.05 (2000) — docs/benchmarks.md. Penalised scores are
floats; ties still go to the tie rank; a share gets the node's best-scoring device. C_m is
an input (a callback), so the choice stays a pure function of the cluster state; it is asked
for only when a best FGD placement loses a shape (else the penalty, >= 0, cannot change the
choice), and counting it is one O(servers) numpy pass per decision, then O(1) per placement
— or, where a producer keeps the counts across decisions (`scarcity.LiveShapeFits`, the simulator),
a pass over the servers changed since the last decision only; the counts are the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Union

import numpy as np

from scheduler.policy.capacity import NodeCap
from scheduler.types import Resources

MILLI = 1000
MAX_SPEC_CPU = 128_000  # the reference's normaliser for CPU (milli-cores)
MAX_SPEC_GPU = 8_000  # ... and for GPU (thousandths: 8 devices)
MAX_NODE_SCORE = 100

STRATEGIES = ("bestfit", "packing", "fgd", "dotprod", "clustering", "random")
# lambda of the scarcity penalty (module docstring): best of 1-2000 on the Alibaba trace.
SCARCITY_WEIGHT = 20.0
SHARE_TAG = "share-gpu"

Seed = Union[int, np.random.Generator]

_get_type = attrgetter("type")
_get_cpus = attrgetter("cpus")
_get_mem = attrgetter("memory_mb")
_get_free = attrgetter("free")
_get_shared = attrgetter("shared")
_get_count = attrgetter("device_count")


# ---------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class TaskShape:
    """One kind of task in the target workload (the reference's "typical pod")."""

    cpu_milli: int
    gpu_milli: int  # per GPU: 1..1000 (0 for a CPU-only shape)
    num_gpu: int  # 0..8
    types: tuple[str, ...]  # allowed GPU types; () = any
    weight: float  # popularity (fraction of tasks)

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or not 0 <= self.gpu_milli <= MILLI or self.num_gpu < 0 or self.weight < 0:
            raise ValueError(f"bad task shape {self}")
        if self.num_gpu > 1 and 0 < self.gpu_milli < MILLI:
            raise ValueError(f"a share of a device is only for one device: {self}")

    @property
    def uses_gpu(self) -> bool:
        """False for CPU-only shapes (the reference tests `gpu_milli == 0`)."""
        return self.num_gpu > 0 and self.gpu_milli > 0


@dataclass(frozen=True)
class Workload:
    """The target workload FGD measures fragmentation against: task shapes and popularity."""

    shapes: tuple[TaskShape, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "_compiled", _Compiled(self.shapes))

    @classmethod
    def from_requests(cls, requests: Iterable[tuple[int, int, int, tuple[str, ...]]], threshold: float = 0.95) -> Workload:
        """Observed (cpu_milli, gpu_milli, num_gpu, types) requests -> popularity, as the
        reference's GetTypicalPods (pkg/utils/frag.go) with the paper's settings (CPU-only
        pods included, popularity threshold 95 %, step 1, no GPU weighting): identical requests
        are counted, sorted by count (ties: larger cpu, gpu_milli, num_gpu, types first), the
        most popular are kept until they cover `threshold` of all requests, and their weights
        are renormalised to sum to 1. A request with no GPU becomes (cpu, 0, 0, ()); the
        reference also counts a zero CPU request as 100 milli-cores (kube's non-zero default),
        which callers must apply themselves (the openb traces have none)."""
        counts: Counter[tuple[int, int, int, tuple[str, ...]]] = Counter()
        for cpu, milli, num, types in requests:
            types = tuple(t for t in (types or ()) if t)
            if num <= 0:  # the reference's pod YAML carries no GPU fields (count, share, model) then
                milli, num, types = 0, 0, ()
            counts[(int(cpu), int(min(milli, MILLI)), int(num), types)] += 1
        total = sum(counts.values())
        if total == 0:
            return cls(())
        ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0][0], kv[0][1], kv[0][2], "|".join(kv[0][3])), reverse=True)
        expected = (threshold * 100.0) * total / 100.0  # the reference: percent * total / 100
        kept, cum = [], 0
        for key, n in ranked:
            if cum >= expected:
                break
            kept.append((key, n))
            cum += n
        return cls(tuple(TaskShape(c, g, k, t, n / cum) for (c, g, k, t), n in kept))


class _Compiled:
    """Numpy views of a workload's GPU shapes, plus a per-GPU-type cache of 'allowed' rows."""

    def __init__(self, shapes: tuple[TaskShape, ...]) -> None:
        self.total_weight = float(sum(s.weight for s in shapes))
        gpu = [s for s in shapes if s.uses_gpu]
        self.types = [s.types for s in gpu]
        self.c = np.array([s.cpu_milli for s in gpu], dtype=np.int64)
        self.k = np.array([s.num_gpu for s in gpu], dtype=np.int32)
        g = np.array([s.gpu_milli for s in gpu], dtype=np.int64)
        self.p = np.array([s.weight for s in gpu], dtype=np.float64)
        self.thresholds, self.u = np.unique(g, return_inverse=True)
        self.u = self.u.reshape(-1).astype(np.intp)
        self._allowed: dict[str, np.ndarray] = {}

    def allowed(self, type_: str) -> np.ndarray:
        row = self._allowed.get(type_)
        if row is None:  # IsNodeAccessibleToPodByType: no types = any; a CPU node never
            row = np.array([not t or (bool(type_) and type_ in t) for t in self.types], dtype=bool)
            self._allowed[type_] = row
        return row


# ---------------------------------------------------------------------------- node arrays


class _Arrays:
    """Column arrays of a list of NodeCap (positions = list positions)."""

    __slots__ = ("nodes", "cpu", "mem", "nfree", "count", "sn", "sv", "sd", "_gfree")

    def __init__(self, nodes: Sequence[NodeCap]) -> None:
        self.nodes = nodes
        self.cpu = np.array(list(map(_get_cpus, nodes)), dtype=np.int64)
        self.mem = np.array(list(map(_get_mem, nodes)), dtype=np.int64)
        self.nfree = np.array(list(map(len, map(_get_free, nodes))), dtype=np.int64)
        sn: list[int] = []
        sv: list[int] = []
        sd: list[int] = []
        for i, shared in enumerate(map(_get_shared, nodes)):
            if shared:
                sn.extend([i] * len(shared))
                sd.extend(shared.keys())
                sv.extend(shared.values())
        self.sn = np.array(sn, dtype=np.int64)
        self.sv = np.minimum(np.array(sv, dtype=np.int64), MILLI)
        self.sd = np.array(sd, dtype=np.int64)
        if len(self.sv) and self.sv.min() <= 0:  # a device with nothing left is simply fully used
            keep = self.sv > 0
            self.sn, self.sv, self.sd = self.sn[keep], self.sv[keep], self.sd[keep]
        self.count = None
        self._gfree = None

    def subset(self, idx: np.ndarray) -> _Arrays:
        out = _Arrays.__new__(_Arrays)
        out.nodes = [self.nodes[i] for i in idx]
        out.cpu, out.mem, out.nfree = self.cpu[idx], self.mem[idx], self.nfree[idx]
        pos = np.full(len(self.nodes), -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        keep = pos[self.sn] >= 0 if len(self.sn) else np.zeros(0, dtype=bool)
        out.sn, out.sv, out.sd = pos[self.sn[keep]], self.sv[keep], self.sd[keep]
        out.count = None
        out._gfree = None
        return out

    @property
    def gfree(self) -> np.ndarray:
        """All free GPU thousandths of each node."""
        if self._gfree is None:
            g = MILLI * self.nfree
            if len(self.sv):
                g = g + np.bincount(self.sn, weights=self.sv, minlength=len(self.nodes)).astype(np.int64)
            self._gfree = g
        return self._gfree

    def device_counts(self) -> np.ndarray:
        if self.count is None:
            self.count = np.array(list(map(_get_count, self.nodes)), dtype=np.int64)
        return self.count

    def min_fitting_share(self, milli: int) -> np.ndarray:
        """Per node, the smallest free share >= milli among partly used devices (MILLI+1: none)."""
        out = np.full(len(self.nodes), MILLI + 1, dtype=np.int64)
        if len(self.sv):
            m = self.sv >= milli
            np.minimum.at(out, self.sn[m], self.sv[m])
        return out


def _request(r: Resources) -> tuple[int, int]:
    """(devices, per-device thousandths) of a single-server request; (0, 0) for CPU-only."""
    if r.nodes != 1:
        raise ValueError(f"choose places single-server requests, not {r.nodes} servers")
    k = r.devices_per_node
    if k <= 0:
        return 0, 0
    if not 0 < r.device_milli <= MILLI:
        raise ValueError(f"device_milli must be in 1..1000, got {r.device_milli}")
    if k > 1 and r.device_milli < MILLI:
        raise ValueError("a share of a device is only for one device")
    return k, r.device_milli


def _feasible(a: _Arrays, r: Resources, k: int, milli: int) -> np.ndarray:
    ok = (a.cpu >= r.cpus_per_node) & (a.mem >= r.memory_mb_per_node)
    if k == 0:
        return ok
    if milli < MILLI:
        has = a.nfree > 0
        if len(a.sv):
            has[a.sn[a.sv >= milli]] = True
        return ok & has
    return ok & (a.nfree >= k)


# ---------------------------------------------------------------------------- fragmentation


def _fit_tables(a: _Arrays, W: _Compiled) -> tuple[np.ndarray, np.ndarray]:
    """N x U: number of devices with free >= threshold, and the sum of their free shares."""
    T = W.thresholds
    n, u = len(a.nodes), len(T)
    cnt = np.repeat(a.nfree.astype(np.int32)[:, None], u, axis=1)  # int32: small counts, faster
    fit = MILLI * cnt
    if len(a.sv) and u:
        ge = a.sv[:, None] >= T[None, :]
        flat = (a.sn[:, None] * u + np.arange(u)[None, :]).ravel()
        cnt += np.bincount(flat, weights=ge.ravel(), minlength=n * u).reshape(n, u).astype(np.int32)
        fit += np.bincount(flat, weights=(a.sv[:, None] * ge).ravel(), minlength=n * u).reshape(n, u).astype(np.int32)
    return cnt, fit


def _allowed_rows(a: _Arrays, W: _Compiled) -> np.ndarray:
    types = list(map(_get_type, a.nodes))
    distinct = set(types)
    if len(distinct) == 1:
        return np.broadcast_to(W.allowed(types[0]), (len(types), len(W.c)))
    codes = {t: i for i, t in enumerate(distinct)}
    table = np.stack([W.allowed(t) for t in codes])
    return table[np.fromiter(map(codes.__getitem__, types), dtype=np.intp, count=len(types))]


def _satisfied(allowed: np.ndarray, cpu: np.ndarray, cnt_u: np.ndarray, fit_u: np.ndarray, W: _Compiled) -> np.ndarray:
    """H[n, m]: the free thousandths that are *not* fragment for GPU shape m (0 if m can't run)."""
    sat = cpu[:, None] >= W.c[None, :]
    sat &= np.take(cnt_u, W.u, axis=1) >= W.k[None, :]
    sat &= allowed
    return np.where(sat, np.take(fit_u, W.u, axis=1), 0)


def _fragments(a: _Arrays, W: _Compiled) -> np.ndarray:
    """F_n in thousandths for every node of `a`."""
    g = a.gfree.astype(np.float64)
    if len(W.c) == 0:
        return g * W.total_weight
    cnt, fit = _fit_tables(a, W)
    h = _satisfied(_allowed_rows(a, W), a.cpu, cnt, fit, W)
    return g * W.total_weight - h.astype(np.float64) @ W.p


def fragmentations(nodes: Sequence[NodeCap], workload: Workload) -> np.ndarray:
    """FGD fragmentation of each node, in GPUs (see the module docstring)."""
    nodes = list(nodes)
    if not nodes:
        return np.zeros(0)
    return _fragments(_Arrays(nodes), workload._compiled) / MILLI  # type: ignore[attr-defined]


def fragmentation(node: NodeCap, workload: Workload) -> float:
    """The FGD fragment measure of one node in GPUs: sum over task shapes m of popularity(m)
    times the node's free GPU share that m could not use (all of it if m cannot run there,
    else the devices whose free share is below m's per-device share)."""
    return float(fragmentations([node], workload)[0])


def cluster_fragmentation(nodes: Iterable[NodeCap], workload: Workload) -> float:
    """Sum of `fragmentation` over the nodes, in GPUs."""
    return float(fragmentations(list(nodes), workload).sum())


# ---------------------------------------------------------------------------- scarcity
# (the per-shape server counts C_m live in scheduler/policy/scarcity.py)


def _less_scarcity(fgd: np.ndarray, hb: np.ndarray, ha: np.ndarray, scarcity: Callable[[], np.ndarray],
                   W: _Compiled) -> np.ndarray:
    """FGD scores (per row) less 100 * lambda * sum_m p_m * [m fits before, not after] / C_m.
    The penalty is >= 0: if no row of the best FGD score loses a shape, those rows stay the
    best ones and the choice is FGD's, so the cluster is not counted (the costly part)."""
    lost = (hb > 0) & (ha == 0)
    if not lost[fgd == fgd.max()].any():
        return fgd
    counts = scarcity()
    return fgd - (lost / np.maximum(counts, 1)[None, :]) @ W.p * (MAX_NODE_SCORE * SCARCITY_WEIGHT)


# ---------------------------------------------------------------------------- scores


def _bestfit(a: _Arrays, k: int, milli: int, cpu_req: int) -> np.ndarray:
    s = ((a.cpu - cpu_req).astype(np.float64) / MAX_SPEC_CPU) * 0.5
    s = s + ((a.gfree - k * milli).astype(np.float64) / MAX_SPEC_GPU) * 0.5
    raw = np.trunc((1.0 - s) * MAX_NODE_SCORE).astype(np.int64)
    lo, hi = raw.min(), raw.max()
    if hi == lo:
        return np.zeros_like(raw)
    return (raw - lo) * MAX_NODE_SCORE // (hi - lo)  # NormalizeScore (non-negative operands)


def _packing(a: _Arrays, k: int, milli: int) -> np.ndarray:
    n = len(a.nodes)
    if k == 0:
        return np.zeros(n, dtype=np.int64)
    all_free = a.nfree == a.device_counts()
    idle = np.maximum(MAX_NODE_SCORE // 3 - a.nfree, a.nfree)
    if milli >= MILLI:
        used = np.full(n, max(MAX_NODE_SCORE // 2 - k, MAX_NODE_SCORE // 3), dtype=np.int64)
    else:
        v = a.min_fitting_share(milli)
        on_shared = np.maximum(MAX_NODE_SCORE - (v * 100 // MILLI) // 10, MAX_NODE_SCORE // 2)
        used = np.where(v < MILLI, on_shared, max(MAX_NODE_SCORE // 2 - 1, MAX_NODE_SCORE // 3))
    return np.where(all_free, idle, used)


def _dotprod(a: _Arrays, k: int, milli: int, cpu_req: int) -> np.ndarray:
    dot = (a.cpu / MAX_SPEC_CPU) * (cpu_req / MAX_SPEC_CPU) + (a.gfree / MAX_SPEC_GPU) * (k * milli / MAX_SPEC_GPU)
    return np.trunc(MAX_NODE_SCORE * (1.0 - dot / 2.0)).astype(np.int64)


def affinity_tag(r: Resources) -> str | None:
    """The reference's GPU affinity tag of a request: "share-gpu", "<k>-gpu", or None (no GPU)."""
    k, milli = _request(r)
    if k == 0:
        return None
    return SHARE_TAG if milli < MILLI else f"{k}-gpu"


def _node_tags(node: NodeCap, affinity: Mapping[str, Collection[str]] | None) -> set[str]:
    if affinity is not None and node.name in affinity:
        tags = affinity[node.name]
        if isinstance(tags, Mapping):
            return {t for t, c in tags.items() if c > 0}
        return set(tags)
    tags = set()
    if any(v > 0 for v in node.shared.values()):
        tags.add(SHARE_TAG)
    if node.device_count - len(node.free) - sum(1 for v in node.shared.values() if v > 0) > 0:
        tags.add("unknown")
    return tags


def _clustering(a: _Arrays, k: int, milli: int, affinity: Mapping[str, Collection[str]] | None) -> np.ndarray:
    n = len(a.nodes)
    if k == 0:
        return np.zeros(n, dtype=np.int64)
    tag = SHARE_TAG if milli < MILLI else f"{k}-gpu"
    num = (MAX_NODE_SCORE // 4) * (MAX_SPEC_GPU - a.gfree)
    base = np.where(num >= 0, num // MAX_SPEC_GPU, -((-num) // MAX_SPEC_GPU))  # Go truncates toward 0
    band = np.empty(n, dtype=np.int64)
    for i, node in enumerate(a.nodes):
        tags = _node_tags(node, affinity)
        if tag in tags:
            band[i] = 75 if len(tags) == 1 else 50
        else:
            band[i] = 25 if not tags else 0
    return base + band


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


def _fgd(a: _Arrays, W: _Compiled, k: int, milli: int, cpu_req: int, exact: bool = False,
         scarcity: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, _Rows | None]:
    """FGD scores per node; for a share also the per-(node, device) rows: (row's node, row's
    device (-1 = the node's lowest wholly free device), row's score). With `scarcity` (the
    C_m of every GPU shape, asked for only when needed) the scores less the penalty."""
    n = len(a.nodes)
    P = W.total_weight
    if len(W.c) == 0:  # no GPU shape: F = P * G, only the GPU taken matters
        cnt = fit = allowed = h_before = None
    else:
        cnt, fit = _fit_tables(a, W)
        allowed = _allowed_rows(a, W)
        h_before = _satisfied(allowed, a.cpu, cnt, fit, W)
    def score(d_g: float, hb: np.ndarray | None, ha: np.ndarray | None, rows: int) -> np.ndarray:
        delta = np.full(rows, d_g * P)
        if hb is not None:
            delta = delta - (hb - ha).astype(np.float64) @ W.p
        if exact:  # the fragmentation avoided itself, unrounded (higher = less added)
            return delta
        fgd = np.trunc((1.0 / (1.0 + np.exp(-delta / MILLI))) * MAX_NODE_SCORE).astype(np.int64)
        if scarcity is not None and hb is not None and ha is not None and len(fgd):
            return _less_scarcity(fgd, hb, ha, scarcity, W)
        return fgd

    if k == 0 or milli >= MILLI:  # CPU-only, or k whole devices: one after-state per node
        taken = k * MILLI
        h_after = None
        if h_before is not None:
            h_after = _satisfied(allowed, a.cpu - cpu_req, cnt - k, fit - taken, W)
        return score(float(taken), h_before, h_after, n), None

    # A share: one after-state per (node, fitting device); wholly free devices are one row.
    free_rows = np.flatnonzero(a.nfree > 0)
    m = a.sv >= milli
    rn = np.concatenate([free_rows, a.sn[m]])
    rv = np.concatenate([np.full(len(free_rows), MILLI, dtype=np.int64), a.sv[m]])
    rd = np.concatenate([np.full(len(free_rows), -1, dtype=np.int64), a.sd[m]])
    h_after = hb = None
    if h_before is not None:
        T = W.thresholds
        v2 = rv - milli
        ge1, ge2 = rv[:, None] >= T[None, :], v2[:, None] >= T[None, :]
        cnt_a = cnt[rn] - ge1 + ge2
        fit_a = fit[rn] - rv[:, None] * ge1 + v2[:, None] * ge2
        h_after = _satisfied(allowed[rn], a.cpu[rn] - cpu_req, cnt_a, fit_a, W)
        hb = h_before[rn]
    row_score = score(float(milli), hb, h_after, len(rn))
    as_float = row_score.dtype == np.float64  # exact, or less the scarcity penalty
    node_score = np.full(n, -np.inf if as_float else -1, dtype=row_score.dtype)
    np.maximum.at(node_score, rn, row_score)
    return node_score, (rn, rd, row_score)


# ---------------------------------------------------------------------------- choose


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _tie_key(nodes: Sequence[NodeCap], rank: Mapping[str, int] | None):  # type: ignore[no-untyped-def]
    if rank is None:
        return lambda i: nodes[i].name
    return lambda i: (rank[nodes[i].name], nodes[i].name)


def _pick(scores: np.ndarray, nodes: Sequence[NodeCap], rank: Mapping[str, int] | None) -> int:
    """The best score; among equals the smallest rank (or name), as the reference's selectHost."""
    tied = np.flatnonzero(scores == scores.max()).tolist()
    if len(tied) == 1:
        return tied[0]
    names = [nodes[i].name for i in tied]
    if rank is None:
        return tied[names.index(min(names))]
    return min(zip([rank[n] for n in names], names, tied))[2]


def _best_share_device(node: NodeCap, milli: int) -> int:
    """gpuSelMethod "best": the fitting device with the least free share, lowest index on ties."""
    options = [(v, d) for d, v in node.shared.items() if v >= milli]
    if node.free:
        options.append((MILLI, min(node.free)))
    return min(options)[1]


def _fitting_devices(node: NodeCap, milli: int) -> list[int]:
    return sorted([d for d, v in node.shared.items() if v >= milli] + list(node.free))


def _scores(strategy: str, r: Resources, a: _Arrays, k: int, milli: int, workload: Workload | None,
            affinity: Mapping[str, Collection[str]] | None,
            scarcity: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, _Rows | None]:
    cpu_req = r.cpus_per_node
    if strategy == "bestfit":
        return _bestfit(a, k, milli, cpu_req), None
    if strategy == "packing":
        return _packing(a, k, milli), None
    if strategy == "dotprod":
        return _dotprod(a, k, milli, cpu_req), None
    if strategy == "clustering":
        return _clustering(a, k, milli, affinity), None
    if strategy == "fgd":
        if workload is None:
            raise ValueError("fgd needs the target workload")
        return _fgd(a, workload._compiled, k, milli, cpu_req, scarcity=scarcity)  # type: ignore[attr-defined]
    raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")


def choose(strategy: str, r: Resources, candidates: Sequence[NodeCap], workload: Workload | None, seed: Seed = 0, *,
           rank: Mapping[str, int] | None = None,
           affinity: Mapping[str, Collection[str]] | None = None,
           scarcity: Callable[[], np.ndarray] | None = None) -> tuple[NodeCap, tuple[int, ...]] | None:
    """Among candidate servers (already filtered by type; may or may not fit), pick the server
    and the device indices for a single-server request `r` (devices_per_node whole devices, or
    one share of device_milli < 1000, or 0 devices for CPU-only), or None if none fits.
    Deterministic for a given seed, and independent of the order of `candidates`: equal scores
    go to the smallest `rank[node.name]` (all candidates must be in `rank` if it is given), else
    to the smallest name. `seed` (int or numpy Generator) is used by `random` only; `affinity`
    (node name -> tags of its GPU pods, see `affinity_tag`) by `clustering` only. `scarcity`
    (`fgd` only) turns on the scarcity penalty: it returns C_m per GPU shape of `workload`
    (`scarcity.ShapeFits.counts` over the whole cluster) and is called only if the penalty could change
    the choice (some candidate fits and a best FGD placement loses a shape)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if scarcity is not None and strategy != "fgd":
        raise ValueError(f"the scarcity penalty is for fgd, not {strategy!r}")
    k, milli = _request(r)
    nodes = candidates if isinstance(candidates, list) else list(candidates)
    if not nodes:
        return None
    a = _Arrays(nodes)
    ok = _feasible(a, r, k, milli)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return None
    if len(idx) < len(nodes):
        a = a.subset(idx)
    feas = a.nodes

    rows = None
    if strategy == "random":
        order = sorted(range(len(feas)), key=_tie_key(feas, rank))
        rng = _rng(seed)
        node = feas[order[int(rng.integers(len(order)))]]
        if k == 0:
            return node, ()
        if milli < MILLI:
            fit = _fitting_devices(node, milli)
            return node, (fit[int(rng.integers(len(fit)))],)
        return node, tuple(sorted(node.free)[:k])

    scores, rows = _scores(strategy, r, a, k, milli, workload, affinity, scarcity)
    i = _pick(scores, feas, rank)
    node = feas[i]
    if k == 0:
        return node, ()
    if milli >= MILLI:
        return node, tuple(sorted(node.free)[:k])
    if rows is not None:  # fgd: the best-scoring device, lowest index on ties
        rn, rd, rs = rows
        own = rn == i
        mine = own & (rs == rs[own].max())
        devs = [int(d) if d >= 0 else min(node.free) for d in rd[mine]]
        return node, (min(devs),)
    return node, (_best_share_device(node, milli),)


def node_scores(strategy: str, r: Resources, candidates: Sequence[NodeCap], workload: Workload | None = None, *,
                affinity: Mapping[str, Collection[str]] | None = None) -> dict[str, int]:
    """The strategy's score of every candidate that fits (name -> score; higher wins), for
    diagnostics and tests. Not defined for `random`."""
    if strategy == "random":
        raise ValueError("random has no scores")
    k, milli = _request(r)
    nodes = list(candidates)
    if not nodes:
        return {}
    a = _Arrays(nodes)
    idx = np.flatnonzero(_feasible(a, r, k, milli))
    if len(idx) == 0:
        return {}
    a = a.subset(idx)
    scores, _ = _scores(strategy, r, a, k, milli, workload, affinity)
    return {n.name: int(s) for n, s in zip(a.nodes, scores)}
