"""Run simulations: pick inputs, a time-limit rule and policies; return JSON-ready results.

Policies compared here all implement the same protocol `decide(snapshot, now)`:
- `suanli`: the live policy, with `--set key=value` overrides of its settings;
- `fifo`: first-fit FIFO (`scheduler/policy/fifo.py`);
- `slurm-like`: multifactor priority with Slurm's classic fair share, EASY backfill, no
  guarantee tiers and no reclaim;
- `bestfit`, `packing`, `fgd`, `dotprod`, `clustering`, `random`: submit order (FIFO) with
  that node-selection strategy (`scheduler/policy/scoring.py`), as in the FGD paper.

Time limits (the policy never sees a job's true duration): `none` (30 days for every job),
`trace` (the trace's limits; a job without one is an error), `overestimate:K` (K × the true
duration, users' typical overestimate), `fixed:SECONDS`.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scheduler.policy import decide
from scheduler.policy.fifo import decide as fifo_decide
from scheduler.policy.fragment import PAPER_CUT, SUANLI_CUT, Workload
from scheduler.sim.engine import Policy, Simulator
from scheduler.sim.metrics import summarize, summarize_fgd
from scheduler.sim.model import SimCluster, SimJob
from scheduler.types import PolicyConfig

NO_LIMIT_S = 30 * 24 * 3600
STRATEGIES = ("bestfit", "packing", "fgd", "dotprod", "clustering", "random")
POLICIES = ("suanli", "fifo", "slurm-like", *STRATEGIES)


class SimError(ValueError):
    """Bad simulation arguments (shown to the user as is)."""


def time_limit_rule(rule: str) -> Callable[[SimJob], float]:
    if rule == "none":
        return lambda j: float(NO_LIMIT_S)
    if rule == "trace":
        def from_trace(j: SimJob) -> float:
            if j.time_limit_s is None:
                raise SimError(f"job {j.id} has no time limit in the trace; use --time-limit overestimate:K or fixed:S")
            return float(j.time_limit_s)
        return from_trace
    kind, _, value = rule.partition(":")
    try:
        x = float(value)
    except ValueError:
        raise SimError(f"bad --time-limit {rule!r}: use none, trace, overestimate:K or fixed:SECONDS") from None
    if x <= 0:
        raise SimError("the --time-limit value must be positive")
    if kind == "overestimate":
        return lambda j: max(1.0, j.duration_s * x)
    if kind == "fixed":
        return lambda j: x
    raise SimError(f"bad --time-limit {rule!r}: use none, trace, overestimate:K or fixed:SECONDS")


def apply_settings(cfg: PolicyConfig, settings: dict[str, str]) -> PolicyConfig:
    """`--set key=value` onto the policy's settings, typed by the field's default."""
    fields = {f.name: f for f in dataclasses.fields(PolicyConfig)}
    changes: dict[str, Any] = {}
    for key, raw in settings.items():
        if key not in fields:
            raise SimError(f"unknown policy setting {key!r}; known: {', '.join(sorted(fields))}")
        current = getattr(cfg, key)
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                changes[key] = raw.lower() in ("true", "1", "yes")
            elif isinstance(current, int):
                changes[key] = int(raw)
            elif isinstance(current, float):
                changes[key] = float(raw)
            else:
                changes[key] = raw
        except ValueError:
            raise SimError(f"bad value {raw!r} for {key} ({type(current).__name__})") from None
    return replace(cfg, **changes)


def policy_for(name: str, cluster: SimCluster, settings: dict[str, str]) -> tuple[Policy, SimCluster]:
    """The decide function and the cluster (carrying the policy's config) for a policy name."""
    if name not in POLICIES:
        raise SimError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    cfg = cluster.policy
    if name == "suanli":
        cfg = apply_settings(cfg, settings)
    elif name == "slurm-like":  # Slurm places by best fit of free resources, not by fragmentation;
        # its multifactor priority has no factor for the requested time limit (that is ours).
        cfg = replace(cfg, fairshare="classic", guarantee_tiers=False, reclaim=False, placement="bucket", weight_shortness=0.0)
    elif name in STRATEGIES:
        cfg = replace(cfg, ordering="fifo", guarantee_tiers=False, reclaim=False, placement=name, backfill_depth=0)

    policy: Policy = fifo_decide if name == "fifo" else decide
    return policy, replace(cluster, policy=cfg)


@dataclass(frozen=True)
class Run:
    mode: str  # time | fgd
    cluster: SimCluster
    jobs: Sequence[SimJob] = ()
    arrivals_by_seed: dict[int, Sequence[SimJob]] | None = None  # fgd mode
    time_limit: str = "overestimate:2"
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    # The typical workload for fragmentation-aware placement; default: the jobs' own shapes
    # (the FGD paper uses the whole original pod list), cut as the paper does (`PAPER_CUT`)
    # for the FGD-family baselines, every shape (`SUANLI_CUT`) for the suanli policy, as
    # the live loop reads it (`workload_for`).
    workload: Workload | None = None
    policy_workload: Workload | None = None
    # time mode: seconds between scheduling cycles (0: decide after every event batch).
    cycle_s: float = 0.0
    # fgd mode: also report the lower bounds of `scheduler.sim.bound` per seed.
    bounds: bool = False


def workload_of(jobs: Iterable[SimJob], cut: float = PAPER_CUT) -> Workload:
    """The target workload (task shapes and popularity) of a list of jobs: the most common
    shapes covering `cut` of them."""
    return Workload.from_requests(((j.cpu_milli, j.device_milli if j.devices else 0, j.devices, j.accelerators) for j in jobs),
                                  threshold=cut)


def workload_for(policy: str, run: Run, jobs: Sequence[SimJob]) -> Workload:
    """The target workload a policy places against: the suanli policy every shape (as the live
    loop reads it: `run.policy_workload`, else all of `jobs`' shapes), the FGD-family
    baselines the paper's cut (`run.workload`, else `jobs`' most common shapes)."""
    if policy == "suanli":
        return run.policy_workload or workload_of(jobs, SUANLI_CUT)
    return run.workload or workload_of(jobs, PAPER_CUT)


def tie_rank(cluster: SimCluster, seed: int) -> dict[str, int]:
    """A seeded random order of the servers for breaking equal placement scores, fixed for a
    run, as the FGD authors' simulator does (it prefixes node names with a random rank)."""
    names = [s.name for s in cluster.servers]
    random.Random(seed).shuffle(names)
    return {n: i for i, n in enumerate(names)}


def simulate(run: Run, policies: Sequence[str], progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": run.mode, "time_limit": run.time_limit, "cycle_s": run.cycle_s, "servers": len(run.cluster.servers),
                           "devices": run.cluster.total_devices, "policies": {}}
    limit = time_limit_rule(run.time_limit)
    for j in run.jobs:  # a rule that cannot give every job a limit fails before any replay
        limit(j)
    for name in policies:
        policy, cluster = policy_for(name, run.cluster, run.settings)
        if run.mode == "time":
            sim = Simulator(cluster, policy, limit, workload_for(name, run, run.jobs))
            total = len(run.jobs)
            cb = (lambda done, n=name, k=total: progress(n, done, k)) if progress else None
            out["policies"][name] = summarize(sim.run(run.jobs, progress=cb, cycle_s=run.cycle_s), cluster)
        elif run.mode == "fgd":
            per_seed = {}
            for seed, arrivals in sorted((run.arrivals_by_seed or {}).items()):
                sim = Simulator(cluster, policy, limit, workload_for(name, run, arrivals), tie_rank(cluster, seed))
                per_seed[seed] = summarize_fgd(sim.run_fgd(arrivals))
                if progress:
                    progress(name, len(per_seed), len(run.arrivals_by_seed or {}))
            values = [r["unallocated_gpu_pct_at_100"] for r in per_seed.values() if r["unallocated_gpu_pct_at_100"] is not None]
            out["policies"][name] = {
                "seeds": per_seed,
                "median_unallocated_gpu_pct_at_100": statistics.median(values) if values else None,
                "mean_unallocated_gpu_pct_at_100": statistics.fmean(values) if values else None,
            }
        else:
            raise SimError(f"unknown mode {run.mode!r}: use time or fgd")
    if run.mode == "fgd" and run.bounds:
        out["bounds"] = fgd_bounds_by_seed(run)
    return out


def fgd_bounds_by_seed(run: Run) -> dict[str, Any]:
    """Per seed the floors of `scheduler.sim.bound` (no policy can leave less unallocated at
    100 %), and their medians; `share_floor_pct` is None where the share pods alone overflow."""
    from scheduler.sim.bound import fgd_bounds

    total = run.cluster.total_devices
    seeds = {seed: fgd_bounds(arrivals, total).as_dict() for seed, arrivals in sorted((run.arrivals_by_seed or {}).items())}

    def median(key: str) -> float | None:
        values = [b[key] for b in seeds.values() if b[key] is not None]
        return statistics.median(values) if values else None

    return {"seeds": seeds, "median_share_floor_pct": median("share_floor_pct"), "median_relaxed_floor_pct": median("relaxed_floor_pct")}
