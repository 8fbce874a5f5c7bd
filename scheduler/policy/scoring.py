"""Node-selection strategies compared in the FGD paper ("Beware of Fragmentation", ATC'23).

Reimplemented (no code copied) from the authors' simulator, hkust-adsl/kubernetes-scheduler-
simulator (Apache-2.0), as configured by its `experiments/run_scripts/generate_run_scripts.py`:
every policy is one score plugin of weight 1000 behind kube-scheduler's filters; the GPU of a
fractional pod is picked by the `Open-Gpu-Share` reserve step. `choose(strategy, r, candidates,
workload, seed)` returns the server and device indices for one single-server request, or None;
`choose_among` makes the same choice over servers already in columns (`fragment.ServerColumns`,
kept across a decision), with the job's types as a row mask and a backfill veto.

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

Share plan (the suanli policy's, `share_ok`): for a share, partly used devices the workload's
share plan rules out (`pairing.py`) are not candidates while any device remains; FGD less the
penalty chooses among the rest.

The fragment measure F and its vectorised tables (the FGD hot path) live in
`scheduler/policy/fragment.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Union

import numpy as np

from scheduler.policy.capacity import NodeCap
from scheduler.policy.fragment import MILLI, Workload, _allowed_rows, _Arrays, _Compiled, _fit_tables, _satisfied
from scheduler.types import Resources

MAX_SPEC_CPU = 128_000  # the reference's normaliser for CPU (milli-cores)
MAX_SPEC_GPU = 8_000  # ... and for GPU (thousandths: 8 devices)
MAX_NODE_SCORE = 100

STRATEGIES = ("bestfit", "packing", "fgd", "dotprod", "clustering", "random")
# lambda of the scarcity penalty (module docstring): best of 1-2000 on the Alibaba trace.
SCARCITY_WEIGHT = 20.0
SHARE_TAG = "share-gpu"

Seed = Union[int, np.random.Generator]


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
         scarcity: Callable[[], np.ndarray] | None = None,
         share_ok: Callable[[str, int], bool] | None = None) -> tuple[np.ndarray, _Rows | None]:
    """FGD scores per node; for a share also the per-(node, device) rows: (row's node, row's
    device (-1 = the node's lowest wholly free device), row's score). With `scarcity` (the
    C_m of every GPU shape, asked for only when needed) the scores less the penalty."""
    n = len(a.nodes)
    P = W.total_weight
    if len(W.c) == 0:  # no GPU shape: F = P * G, only the GPU taken matters
        cnt = fit = allowed = h_before = None
    elif a.tables is not None and a.tables[0] is W:  # kept across the decision (fragment.ServerColumns)
        _, cnt, fit, allowed, h_before = a.tables
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
    if share_ok is not None and m.any():  # the share plan (pairing.py): partly used devices it allows
        fitting = np.flatnonzero(m)
        ok = np.fromiter((share_ok(a.nodes[n].name, d) for n, d in zip(a.sn[fitting].tolist(), a.sd[fitting].tolist())),
                         dtype=bool, count=len(fitting))
        if ok.any() or len(free_rows):  # else every device that fits, as without the plan
            m = np.zeros_like(m)
            m[fitting[ok]] = True
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


def _pick(scores: np.ndarray, nodes: Sequence[NodeCap], rank: Mapping[str, int] | None,
          tie: np.ndarray | None = None) -> int:
    """The best score; among equals the smallest rank (or name), as the reference's selectHost
    (`tie`, where the columns carry it: each row's place in that order, precomputed)."""
    tied = np.flatnonzero(scores == scores.max())
    if len(tied) == 1:
        return int(tied[0])
    if tie is not None:
        return int(tied[np.argmin(tie[tied])])
    tied = tied.tolist()
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
            scarcity: Callable[[], np.ndarray] | None = None,
            share_ok: Callable[[str, int], bool] | None = None) -> tuple[np.ndarray, _Rows | None]:
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
        return _fgd(a, workload._compiled, k, milli, cpu_req, scarcity=scarcity, share_ok=share_ok)  # type: ignore[attr-defined]
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
    nodes = candidates if isinstance(candidates, list) else list(candidates)
    return choose_among(strategy, r, _Arrays(nodes), workload, seed, rank=rank, affinity=affinity, scarcity=scarcity)


def choose_among(strategy: str, r: Resources, a: _Arrays, workload: Workload | None, seed: Seed = 0, *,
                 rank: Mapping[str, int] | None = None,
                 affinity: Mapping[str, Collection[str]] | None = None,
                 scarcity: Callable[[], np.ndarray] | None = None,
                 veto: Callable[[NodeCap], bool] | None = None,
                 rows: np.ndarray | None = None,
                 share_ok: Callable[[str, int], bool] | None = None) -> tuple[NodeCap, tuple[int, ...]] | None:
    """`choose` over servers already in columns (`fragment._Arrays`, e.g. kept across a
    decision by `fragment.ServerColumns`): the same choice as `choose` over the `a.nodes` in
    the bool mask `rows` (default all) less those `veto` refuses (asked only of those that fit).
    Where the columns carry a tie order (`a.tie`) it must be `rank`'s. `share_ok(server,
    device)` (fgd, a share only: the share plan of `pairing.py`) limits the partly used
    devices a share may join, unless it leaves no device at all."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if scarcity is not None and strategy != "fgd":
        raise ValueError(f"the scarcity penalty is for fgd, not {strategy!r}")
    k, milli = _request(r)
    if not len(a.nodes):
        return None
    ok = _feasible(a, r, k, milli)
    idx = np.flatnonzero(ok if rows is None else ok & rows)
    if veto is not None and len(idx):
        idx = idx[np.array([not veto(a.nodes[i]) for i in idx.tolist()], dtype=bool)]
    if len(idx) == 0:
        return None
    if len(idx) < len(a.nodes):  # FGD with kept tables reads no share unless it places one
        a = a.subset(idx, shares=not (strategy == "fgd" and a.tables is not None and (k == 0 or milli >= MILLI)))
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

    scores, rows = _scores(strategy, r, a, k, milli, workload, affinity, scarcity, share_ok)
    i = _pick(scores, feas, rank, a.tie)
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
