"""Metrics of a simulation run (pure functions of its records).

- JCT = end − submit and wait = first start − submit, over jobs that finished.
- Device utilization = device-seconds held / (devices × makespan).
- Fairness: each tenant's share of the device-seconds used vs its entitlement (its
  normalized shares: pool share × org share among siblings), and Jain's index over the
  ratios share/entitlement of the tenants that ran something (1 = perfectly proportional).
  Over a whole replay every job runs, so usage follows demand whatever the policy; the
  telling figure is `jain_index_contended`: the same index taken at every decision while
  jobs wait, over the tenants with work at that moment, time-weighted (engine.py).
- Size classes for the longest wait: 1, 2–4, 5–8, 9+ devices (fractions count as 1).
- FGD mode: the allocation ratio curve and the unallocated device % at 100 % arrived.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from scheduler.sim.engine import SimResult
from scheduler.sim.model import SimCluster


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def jain(xs: Sequence[float]) -> float | None:
    """Jain's fairness index (Σx)² / (n Σx²), in (0, 1]."""
    xs = [x for x in xs if x >= 0]
    if not xs or not any(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def size_class(devices: float) -> str:
    if devices <= 1:
        return "1"
    if devices <= 4:
        return "2-4"
    if devices <= 8:
        return "5-8"
    return "9+"


def entitlements(cluster: SimCluster, tenants: Sequence[str]) -> dict[str, float]:
    """Normalized shares: pool share among pools × org share among the pool's orgs."""
    known = {t.org: t for t in cluster.tenants}
    pool_of = {o: (known[o].pool if o in known else "default") for o in tenants}
    shares = {o: (known[o].shares if o in known else 1.0) for o in tenants}
    pools = sorted(set(pool_of.values()))
    pool_share = {p: cluster.pool_shares.get(p, 1.0) for p in pools}
    total_pool = sum(pool_share.values()) or 1.0
    out = {}
    for o in tenants:
        siblings = sum(shares[x] for x in tenants if pool_of[x] == pool_of[o]) or 1.0
        out[o] = pool_share[pool_of[o]] / total_pool * shares[o] / siblings
    return out


def summarize(result: SimResult, cluster: SimCluster) -> dict[str, Any]:
    recs = list(result.records.values())
    done = [r for r in recs if r.end is not None]
    jct = [r.end - r.job.submit_time for r in done]  # type: ignore[operator]
    waits = [r.first_start - r.job.submit_time for r in recs if r.first_start is not None]  # type: ignore[operator]
    busy = sum(r.busy_device_s for r in recs)
    span = result.makespan or 0.0
    by_tenant: dict[str, float] = defaultdict(float)
    for r in recs:
        by_tenant[r.job.tenant] += r.busy_device_s
    tenants = sorted(by_tenant)
    ent = entitlements(cluster, tenants)
    share = {t: (by_tenant[t] / busy if busy else 0.0) for t in tenants}
    longest: dict[str, float] = defaultdict(float)
    for r in recs:
        if r.first_start is not None:
            c = size_class(r.job.gpu_request)
            longest[c] = max(longest[c], r.first_start - r.job.submit_time)
    out: dict[str, Any] = {
        "jobs": len(recs),
        "finished": len(done),
        "timeouts": sum(1 for r in recs if r.status == "TIMEOUT"),
        "still_pending": sum(1 for r in recs if r.status == "PENDING"),
        "avg_jct_s": sum(jct) / len(jct) if jct else None,
        "p50_jct_s": percentile(jct, 50),
        "p99_jct_s": percentile(jct, 99),
        "avg_wait_s": sum(waits) / len(waits) if waits else None,
        "p99_wait_s": percentile(waits, 99),
        "makespan_s": span,
        "device_utilization": busy / (result.total_devices * span) if span and result.total_devices else None,
        "preemptions": sum(r.preemptions for r in recs),
        "tenants": {t: {"usage_share": share[t], "entitlement": ent[t], "ratio": share[t] / ent[t] if ent[t] else None}
                    for t in tenants},
        "jain_index": jain([share[t] / ent[t] for t in tenants if ent[t]]),
        "jain_index_contended": result.contended_jain,
        "longest_wait_s_by_size": dict(sorted(longest.items())),
        "decisions": result.decisions,
        # For charts: JCT at every percentile 0..100, and the sampled time series.
        "jct_quantiles_s": [percentile(jct, q) for q in range(0, 101)] if jct else [],
        "series": [[round(t, 3), q, round(b, 3), {k: round(v, 3) for k, v in by.items()}] for t, q, b, by in result.samples],
    }
    return out


def summarize_fgd(result: SimResult) -> dict[str, Any]:
    curve = result.allocation_curve
    at_100 = next((alloc for arrived, alloc in curve if arrived == 100.0), None)
    return {
        "arrivals": len(result.records),
        "dropped": result.dropped,
        "allocation_curve": [[a, round(v, 4)] for a, v in curve],
        "allocated_pct_at_100": at_100,
        "unallocated_gpu_pct_at_100": None if at_100 is None else round(100 - at_100, 4),
        "decisions": result.decisions,
    }
