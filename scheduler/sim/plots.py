"""PNG charts of simulation results (matplotlib, headless Agg backend).

- fgd mode: GPU allocation ratio vs arrived load, each policy's median over its seeds,
  with the FGD authors' published medians for the same pod list drawn beside ours
  (`published_results/analysis_allo_discrete.csv`, when given), and with `--bound` the two
  floors at 100 % arrived as markers (the most any placement could have allocated there).
- time mode: JCT CDF per policy; queue length and device utilization over time; each
  tenant's share of busy devices over time (suanli policy, or the first one run).
Every function returns the paths it wrote.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PUBLISHED = Path("/work/shared/traces/alibaba-gpu-v2023/published_results/analysis_allo_discrete.csv")


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def published_curves(path: Path, workload: str) -> dict[str, list[tuple[float, float]]]:
    """Median allocation % per arrived % for each policy of the FGD paper, for one pod list."""
    by_policy: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["workload"] != workload:
                continue
            name = row["sc_policy"].split("-", 1)[-1]
            for k in range(131):
                v = row.get(str(k))
                if v not in (None, ""):
                    by_policy[name][k].append(float(v))
    return {p: [(float(k), statistics.median(vs)) for k, vs in sorted(ks.items())] for p, ks in by_policy.items()}


def write_plots(results: dict[str, Any], folder: Path, published: Path | None = PUBLISHED, workload: str | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if results["mode"] == "fgd":
        return [_fgd(results, folder, published, workload or results.get("workload"))]
    return [p for p in (_jct_cdf(results, folder), _queue_util(results, folder), _tenant_share(results, folder)) if p]


def _median_curve(seeds: dict[Any, dict[str, Any]]) -> list[tuple[float, float]]:
    points: dict[float, list[float]] = defaultdict(list)
    for r in seeds.values():
        for arrived, alloc in r["allocation_curve"]:
            points[arrived].append(alloc)
    return [(a, statistics.median(v)) for a, v in sorted(points.items())]


def _fgd(results: dict[str, Any], folder: Path, published: Path | None, workload: str | None) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in results["policies"].items():
        xs, ys = zip(*_median_curve(r["seeds"]), strict=False) if r["seeds"] else ((), ())
        ax.plot(xs, ys, linewidth=2, label=f"{name} (ours)")
    if published is not None and workload and published.exists():
        for name, curve in sorted(published_curves(published, workload).items()):
            xs, ys = zip(*curve, strict=False)
            ax.plot(xs, ys, linestyle="--", linewidth=1, label=f"{name} (FGD paper)")
    bounds = results.get("bounds") or {}
    for key, marker, label in (("median_share_floor_pct", "v", "best packing of the same share pods (floor)"),
                               ("median_relaxed_floor_pct", "^", "any placement, pods may stay out (floor)")):
        if bounds.get(key) is not None:  # what no placement can beat at 100 % arrived (`--bound`)
            ax.plot([100], [100 - bounds[key]], marker=marker, color="black", linestyle="none", label=label)
    ax.plot([0, 130], [0, 130], color="grey", linewidth=0.5)
    ax.set_xlim(60, 130)
    ax.set_ylim(50, 100)
    ax.set_xlabel("arrived GPU requests (% of capacity)")
    ax.set_ylabel("allocated GPUs (%)")
    ax.set_title(f"GPU allocation vs arrived load{f' — {workload}' if workload else ''}")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, folder / "allocation.png")


def _jct_cdf(results: dict[str, Any], folder: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for name, r in results["policies"].items():
        q = r.get("jct_quantiles_s")
        if q:
            ax.plot([v / 3600 for v in q], [i / (len(q) - 1) for i in range(len(q))], label=name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (hours, log)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("JCT CDF")
    ax.legend()
    return _save(fig, folder / "jct_cdf.png")


def _queue_util(results: dict[str, Any], folder: Path) -> Path | None:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    drawn = False
    for name, r in results["policies"].items():
        series = r.get("series") or []
        if series:
            t = [s[0] / 3600 for s in series]
            ax1.plot(t, [s[1] for s in series], label=name)
            ax2.plot(t, [s[2] / results["devices"] for s in series], label=name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax1.set_ylabel("pending jobs")
    ax2.set_ylabel("devices busy (fraction)")
    ax2.set_xlabel("time (hours)")
    ax1.legend(fontsize=8)
    return _save(fig, folder / "queue_utilization.png")


def _tenant_share(results: dict[str, Any], folder: Path) -> Path | None:
    name = "suanli" if "suanli" in results["policies"] else next(iter(results["policies"]), None)
    if name is None:
        return None
    series = results["policies"][name].get("series") or []
    tenants = sorted({k for s in series for k in s[3]})
    if not tenants:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    t = [s[0] / 3600 for s in series]
    for tenant in tenants:
        ax.plot(t, [(s[3].get(tenant, 0.0) / s[2]) if s[2] else 0.0 for s in series], label=tenant)
    ax.set_xlabel("time (hours)")
    ax.set_ylabel("share of busy devices")
    ax.set_title(f"per-tenant share over time ({name})")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, folder / "tenant_share.png")
