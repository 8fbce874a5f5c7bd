"""The FGD fragment measure (the paper's F_n(M)) of servers against a target workload, and
the vectorised per-node tables it and FGD scoring (`scoring.py`) are computed from.

Fragmentation (pkg/utils/frag.go, NodeGpuShareFragAmountScore; the paper's F_n(M)): for a
task shape m with popularity p_m, a node's free GPU thousandths G are all fragment when m
cannot run there (no GPU asked, type not allowed, too few devices with >= m's per-device
share, or too little CPU); when m can run, only the devices whose free share is below m's
per-device share are fragment. F_n = sum_m p_m * frag_n(m). `fragmentation` returns F_n in GPUs.

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
a node's wholly free devices (they are all alike) plus one per partly used device that fits.
The FGD score (`scoring.py`) uses F_before - F_after = dG*P - (H_before - H_after) @ p,
integers up to the last product, so an unchanged node scores exactly 50. Per call this is a handful of
(N x ~30) array operations; the per-type "allowed" rows are cached on the Workload.

Within a decision (and in the simulator, across decisions) `ServerColumns` keeps those columns
and tables for every server and patches only the rows of the servers a start or an end
changed: building them is a Python pass over the servers, which had cost more than the
scoring itself when done per job (`suanli bench scheduler`, docs/benchmarks.md).

Invariants: pure arithmetic on the NodeCap values given (no I/O, no clock, no randomness);
`fragmentations` is, node by node, the sum over shapes of p_m times the free thousandths m
cannot use (worked examples in tests/unit/test_scoring.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from scheduler.policy.capacity import NodeCap
from scheduler.types import Resources

MILLI = 1000
# How much of a workload's requests its shapes must cover (`Workload.from_requests`): the FGD
# paper's typical pods are the most common shapes covering 95 %; the suanli policy keeps every
# shape, because the rare ones are the big multi-GPU jobs the scarcity penalty must keep
# servers for (Alibaba v2023, FGD protocol, seeds 42-47: the same unallocated % on average,
# and 1-4 multi-GPU pods turned away before 95 % arrived instead of 9-14; docs/benchmarks.md).
PAPER_CUT = 0.95
SUANLI_CUT = 1.0

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
    def from_requests(cls, requests: Iterable[tuple[int, int, int, tuple[str, ...]]], threshold: float = PAPER_CUT) -> Workload:
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

# FGD's per-node tables for one workload: (W, fit counts N x U, fit sums N x U, allowed N x M,
# satisfied H N x M) — what `_fgd` would compute from the columns (see the module docstring).
_Tables = tuple  # (_Compiled, np.ndarray, np.ndarray, np.ndarray, np.ndarray)


class _Arrays:
    """Column arrays of a list of NodeCap (positions = list positions)."""

    __slots__ = ("nodes", "cpu", "mem", "nfree", "count", "sn", "sv", "sd", "_gfree", "type_names", "tcode", "tables", "tie")

    def __init__(self, nodes: Sequence[NodeCap]) -> None:
        self.nodes = nodes
        # Where a producer knows them: the types present and each row's index into them.
        self.type_names: list[str] | None = None
        self.tcode: np.ndarray | None = None
        self.tables: _Tables | None = None  # FGD's per-node tables, when a producer keeps them
        self.tie: np.ndarray | None = None  # each row's place in the tie order, when known
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

    def subset(self, idx: np.ndarray, shares: bool = True) -> _Arrays:
        """The rows `idx`; without `shares` the partly used devices are left out (sn, sv, sd
        None: for FGD with kept tables and a request that takes no share of a device)."""
        out = _Arrays.__new__(_Arrays)
        nodes = self.nodes
        out.nodes = nodes[idx] if isinstance(nodes, np.ndarray) else [nodes[i] for i in idx]
        out.type_names = self.type_names
        out.tcode = None if self.tcode is None else self.tcode[idx]
        out.tables = None if self.tables is None else (self.tables[0], *(t[idx] for t in self.tables[1:]))
        out.tie = None if self.tie is None else self.tie[idx]
        out.cpu, out.mem, out.nfree = self.cpu[idx], self.mem[idx], self.nfree[idx]
        out.count = None if self.count is None else self.count[idx]
        out._gfree = None
        if not shares:
            out.sn = out.sv = out.sd = None
            return out
        pos = np.full(len(self.nodes), -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        keep = pos[self.sn] >= 0 if len(self.sn) else np.zeros(0, dtype=bool)
        out.sn, out.sv, out.sd = pos[self.sn[keep]], self.sv[keep], self.sd[keep]
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


class ServerColumns:
    """The `_Arrays` of every server of a decision's capacity indexes (type ->
    `capacity.TypeCapacity`), kept for one decision: built once, then patched row by row for
    the servers a start changed, so scoring a job costs numpy work over the servers, not a
    Python pass building the columns. Given a workload, FGD's per-node tables (`_Tables`) are
    kept the same way. Rows carry their type (`tcode`), so a job's accepted types are a mask.

    Invariant: after `changed(name)` for every server changed since the last `arrays()`,
    `arrays(W)` holds the same rows (and tables) as `_Arrays` built afresh from the servers in
    this object's fixed order (row order does not matter to the scores: ties go by rank or
    name). The `_Arrays` returned is valid until the next `changed` (patched in place)."""

    def __init__(self, caps, rank: Mapping[str, int] | None = None) -> None:  # type: ignore[no-untyped-def]
        self._caps = caps
        self.rank = rank  # the tie order of equal scores (server -> rank; None: by name)
        self.type_names = sorted(caps)
        per_type = [caps[t].servers_for(Resources((), 0)) for t in self.type_names]  # every server (fast on a fork)
        nodes = [n for ns in per_type for n in ns]
        n = len(nodes)
        self.index = {node.name: i for i, node in enumerate(nodes)}
        self.nodes = np.empty(n, dtype=object)
        self.nodes[:] = nodes
        self.tcode = np.repeat(np.arange(len(per_type), dtype=np.intp), [len(ns) for ns in per_type])
        # Each row's place in the order ties are broken by (smallest rank, then name).
        names = [x.name for x in nodes]
        order = sorted(range(n), key=(lambda i: names[i]) if rank is None else (lambda i: (rank[names[i]], names[i])))
        self.tie = np.empty(n, dtype=np.int64)
        self.tie[order] = np.arange(n)
        width = max([x.device_count for x in nodes] + [d + 1 for x in nodes for d in x.shared] + [1])
        self.cpu = np.fromiter(map(_get_cpus, nodes), dtype=np.int64, count=n)
        self.mem = np.fromiter(map(_get_mem, nodes), dtype=np.int64, count=n)
        self.nfree = np.fromiter(map(len, map(_get_free, nodes)), dtype=np.int64, count=n)
        self.count = np.fromiter(map(_get_count, nodes), dtype=np.int64, count=n)
        self.share = np.zeros((n, width), dtype=np.int64)  # free thousandths of partly used devices
        for i, node in enumerate(nodes):
            self._shares(i, node)
        self._dirty: set[str] = set()
        self._arrays: _Arrays | None = None
        self._share_changed = True
        self._tables: _Tables | None = None

    @property
    def capacity(self):  # type: ignore[no-untyped-def]
        """The capacity indexes (type -> TypeCapacity) these columns describe."""
        return self._caps

    def fork(self, caps, W: _Compiled | None = None) -> ServerColumns:  # type: ignore[no-untyped-def]
        """A copy to decide on over `caps` (a decision's forks of the capacity these columns
        keep): the changes told so far applied here first (and FGD's tables for `W` made),
        then the columns copied at C speed; the decision's own changes patch only the copy."""
        self.arrays(W)
        c = ServerColumns.__new__(ServerColumns)
        c._caps, c.type_names, c.index, c.tcode, c.count = caps, self.type_names, self.index, self.tcode, self.count
        c.rank, c.tie = self.rank, self.tie
        c.nodes, c.cpu, c.mem, c.nfree, c.share = (x.copy() for x in (self.nodes, self.cpu, self.mem, self.nfree, self.share))
        c._dirty, c._arrays, c._share_changed = set(), None, True
        c._tables = None
        if self._tables is not None:  # "allowed" never changes: shared
            Wt, cnt, fit, allowed, hb = self._tables
            c._tables = (Wt, cnt.copy(), fit.copy(), allowed, hb.copy())
        return c

    def rows_of(self, types: Sequence[str]) -> np.ndarray | None:
        """Bool mask of the rows of these types (None: every row)."""
        codes = [self.type_names.index(t) for t in types if t in self._caps]
        if len(codes) == len(self.type_names):
            return None
        if len(codes) == 1:
            return self.tcode == codes[0]
        return np.isin(self.tcode, codes)

    def _shares(self, i: int, node: NodeCap) -> None:
        row = self.share[i]
        if not node.shared and not row.any():  # no partly used device before or after
            return
        self._share_changed = True
        row[:] = 0
        for d, v in node.shared.items():
            if d >= len(row):  # a device index past every server's count: widen once
                self.share = np.pad(self.share, ((0, 0), (0, d + 1 - len(row))))
                row = self.share[i]
            row[d] = min(v, MILLI) if v > 0 else 0

    def changed(self, name: str) -> None:
        """Server `name` changed (a start on it): re-read it when next asked."""
        self._dirty.add(name)

    def arrays(self, W: _Compiled | None = None) -> _Arrays:
        """The columns now; with `W`, FGD's tables for that workload attached."""
        if self._dirty:
            rows = sorted(self.index[name] for name in self._dirty)
            self._dirty.clear()
            for i in rows:
                old = self.nodes[i]
                node = self._caps[old.type].nodes[old.name]  # a fork copies a server on its first change
                self.nodes[i] = node
                self.cpu[i], self.mem[i], self.nfree[i] = node.cpus, node.memory_mb, len(node.free)
                self._shares(i, node)
                if self._tables is not None:  # recompute the changed servers' rows only
                    self._patch_tables(i)
        a = self._columns()
        if W is not None and len(W.c) and (self._tables is None or self._tables[0] is not W):
            cnt, fit = _fit_tables(a, W)
            allowed = _allowed_rows(a, W)
            self._tables = (W, cnt, fit, allowed, _satisfied(allowed, a.cpu, cnt, fit, W))
        a.tables = self._tables if W is not None and self._tables is not None and self._tables[0] is W else None
        return a

    def _patch_tables(self, i: int) -> None:
        """Row i of the tables, as `_fit_tables` and `_satisfied` would give it, in plain Python
        (one server: numpy's per-call overhead would cost more than the arithmetic)."""
        W, cnt, fit, allowed, hb = self._tables  # type: ignore[misc]
        nfree, cpu = int(self.nfree[i]), int(self.cpu[i])
        shares = [v for v in self.share[i].tolist() if v > 0]
        thresholds = W.thresholds.tolist()
        c_row = [nfree + sum(v >= g for v in shares) for g in thresholds]
        f_row = [MILLI * nfree + sum(v for v in shares if v >= g) for g in thresholds]
        cnt[i], fit[i] = c_row, f_row
        ok = allowed[i].tolist()
        hb[i] = [f_row[u] if ok[m] and cpu >= c and c_row[u] >= k else 0
                 for m, (c, k, u) in enumerate(zip(W.c.tolist(), W.k.tolist(), W.u.tolist()))]

    def _columns(self) -> _Arrays:
        """One `_Arrays` over the kept columns (they are patched in place); its flattened
        shares are re-read only when a partly used device changed."""
        a = self._arrays
        if a is None:
            a = self._arrays = _Arrays.__new__(_Arrays)
            a.nodes, a.cpu, a.mem, a.nfree, a.count = self.nodes, self.cpu, self.mem, self.nfree, self.count
            a.type_names, a.tcode, a.tables, a.tie = self.type_names, self.tcode, None, self.tie
        if self._share_changed:
            a.sn, a.sd = np.nonzero(self.share)
            a.sv = self.share[a.sn, a.sd]
            self._share_changed = False
        a._gfree = None
        return a


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
    if a.tcode is not None and a.type_names is not None:
        return np.stack([W.allowed(t) for t in a.type_names])[a.tcode] if a.type_names else np.zeros((0, len(W.c)), bool)
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
