"""`suanli simulate`: replay a workload through the live policy (and baselines) offline.

Inputs: a generic trace CSV with a cluster YAML (docs/simulation-inputs.md), the Alibaba
GPU trace v2023 (pod list; its node list is read from the same folder unless given), or
Slurm accounting (`sacct --parsable2`) with a cluster YAML. Errors name the file, the line
and the field; the exit code is 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scheduler.sim.model import SimCluster, SimJob, SimServer, SimTenant
from scheduler.sim.run import POLICIES, Run, SimError, simulate

err = Console(stderr=True, highlight=False)


def _fail(message: str) -> None:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(2)


def pod_job(pod: Any, job_id: int, tenant: str = "tenant-0") -> SimJob:
    """An Alibaba pod as a simulated job (fgd mode: it never leaves)."""
    fraction = pod.num_gpu == 1 and pod.gpu_milli < 1000
    types = tuple(dict.fromkeys(t for t in pod.gpu_spec if t))  # the trace repeats some types
    return SimJob(job_id, 0.0, 1.0, pod.num_gpu, 1, pod.gpu_milli if fraction else 1000, types, tenant,
                  cpu_milli=pod.cpu_milli, memory_mib=pod.memory_mib, name=pod.name)


def alibaba_cluster(nodes: list[SimServer], tenants: int) -> SimCluster:
    return SimCluster(tuple(nodes), tuple(SimTenant(f"tenant-{k}") for k in range(tenants)))


def load(trace: Path | None, cluster: Path | None, alibaba: Path | None, alibaba_nodes: Path | None, sacct: Path | None,
         mode: str, seeds: list[int], tenants: int, tenant_seed: int, tune: float) -> Run:
    from scheduler.sim import alibaba as ali
    from scheduler.sim.cluster_file import read_cluster
    from scheduler.sim.traces import read_trace

    sources = [x for x in (trace, alibaba, sacct) if x is not None]
    if len(sources) != 1:
        raise SimError("give exactly one of --trace, --alibaba, --from-sacct")
    if alibaba is not None:
        nodes_file = alibaba_nodes or alibaba.parent / "openb_node_list_gpu_node.csv"
        nodes = ali.read_nodes(nodes_file)
        pods = ali.read_pods(alibaba)
        cl = read_cluster(cluster) if cluster else alibaba_cluster(nodes, tenants)
        if mode == "fgd":
            from scheduler.policy.fragment import SUANLI_CUT
            from scheduler.sim.run import workload_of

            total = sum(n.devices for n in nodes)
            arrivals = {seed: [pod_job(p, i + 1) for i, p in enumerate(ali.fgd_arrivals(pods, total, seed, tune))] for seed in seeds}
            # The paper's target workload is the whole original pod list (the suanli policy: all its shapes).
            every = [pod_job(p, i + 1) for i, p in enumerate(pods)]
            return Run("fgd", cl, arrivals_by_seed=arrivals, workload=workload_of(every),
                       policy_workload=workload_of(every, SUANLI_CUT))
        jobs, _skipped = ali.pods_to_jobs(pods, tenants, tenant_seed)
        return Run("time", cl, jobs)
    if cluster is None:
        raise SimError("--cluster FILE.yaml is needed with --trace and --from-sacct")
    cl = read_cluster(cluster)
    if sacct is not None:
        from scheduler.sim.sacct import read_sacct

        jobs = read_sacct(sacct)
    else:
        jobs = read_trace(trace)  # type: ignore[arg-type]
    if mode == "fgd":
        return Run("fgd", cl, arrivals_by_seed={0: [replace_submit(j) for j in jobs]})
    return Run("time", cl, jobs)


def compress(jobs: Sequence[SimJob], k: float) -> list[SimJob]:
    """The jobs with submit times divided by `k` (> 0) from the first one's: the same work
    arriving k× as densely, so the offered load is k× (a month-long trace that never queues
    can be replayed at the load of a busy center). Durations and time limits are kept."""
    if not 0 < k < float("inf"):  # (NaN too)
        raise SimError(f"--time-scale must be a positive number, got {k}")
    if not jobs:
        return []
    t0 = min(j.submit_time for j in jobs)
    return [replace(j, submit_time=t0 + (j.submit_time - t0) / k) for j in jobs]


def replace_submit(job: SimJob) -> SimJob:
    return replace(job, submit_time=0.0)


def simulate_command(
    trace: Annotated[Path | None, typer.Option(help="Generic trace CSV (docs/simulation-inputs.md)")] = None,
    cluster: Annotated[Path | None, typer.Option(help="Cluster YAML: servers, tenancy, quotas, prices")] = None,
    alibaba: Annotated[Path | None, typer.Option(help="Alibaba GPU trace v2023 pod list (openb_pod_list_*.csv)")] = None,
    alibaba_nodes: Annotated[Path | None, typer.Option(help="Alibaba node list (default: openb_node_list_gpu_node.csv beside it)")] = None,
    from_sacct: Annotated[Path | None, typer.Option("--from-sacct", help="`sacct --parsable2` output")] = None,
    mode: Annotated[str, typer.Option(help="time (arrivals and departures) or fgd (the FGD paper's protocol)")] = "time",
    seeds: Annotated[str, typer.Option(help="fgd mode: seeds, e.g. 42-51 or 42,43")] = "42",
    tune: Annotated[float, typer.Option(help="fgd mode: arrived GPU requests as a multiple of capacity")] = 1.3,
    tenants: Annotated[int, typer.Option(help="Alibaba: tenants assigned by hashing pod names")] = 8,
    tenant_seed: Annotated[int, typer.Option(help="Alibaba: seed of the tenant assignment")] = 0,
    time_limit: Annotated[str, typer.Option(help="none | trace | overestimate:K | fixed:SECONDS")] = "overestimate:2",
    cycle: Annotated[float, typer.Option(help="time mode: seconds between scheduling cycles (0: after every event)")] = 10.0,
    policy: Annotated[str, typer.Option(help=f"One of {', '.join(POLICIES)}")] = "suanli",
    compare: Annotated[str | None, typer.Option(help="Several policies on the same input, comma-separated")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="suanli policy setting key=value (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full results as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write PNG charts into this folder")] = None,
    bound: Annotated[bool, typer.Option("--bound", help="fgd mode: also the least any placement can leave unallocated")] = False,
    time_scale: Annotated[float, typer.Option(help="time mode: submit times divided by this (arrivals K× as dense, "
                                                   "durations kept: offered load × K)")] = 1.0,
) -> None:
    """Replay a workload through the live policy and baselines; report JCT, waits,
    utilization, fairness and (fgd mode) the allocation curve."""
    from scheduler.sim.traces import TraceError

    try:
        seed_list = parse_seeds(seeds)
        settings = dict(_kv(x) for x in (set_ or []))
        policies = [p.strip() for p in (compare or policy).split(",") if p.strip()]
        run = load(trace, cluster, alibaba, alibaba_nodes, from_sacct, mode, seed_list, tenants, tenant_seed, tune)
        if cycle < 0:
            raise SimError("--cycle must be >= 0")
        if bound and run.mode != "fgd":
            raise SimError("--bound needs --mode fgd")
        if time_scale != 1.0:
            if run.mode != "time":
                raise SimError("--time-scale needs --mode time")
            run = replace(run, jobs=compress(run.jobs, time_scale))
        run = replace(run, time_limit=time_limit, settings=settings, cycle_s=cycle, bounds=bound)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=not sys.stderr.isatty()) as bar:
            tasks: dict[str, Any] = {}

            def progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done)

            results = simulate(run, policies, progress)
        results["workload"] = alibaba.stem if alibaba is not None else (trace or from_sacct).stem  # type: ignore[union-attr]
    except (SimError, TraceError, OSError, ValueError) as e:
        _fail(str(e))
    if plot is not None:
        from scheduler.sim.plots import write_plots

        results["plots"] = [str(p) for p in write_plots(results, plot)]
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        _table(results)


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise SimError(f"bad --seeds {text!r}: use 42, 42-51 or 42,43") from None
    return out


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SimError(f"--set needs key=value, got {text!r}")
    return key.strip(), value.strip()


def _table(results: dict[str, Any]) -> None:
    from rich.table import Table

    out = Console(highlight=False)
    if results["mode"] == "fgd":
        t = Table("POLICY", "MEDIAN UNALLOCATED % @100", "MEAN")
        for name, r in results["policies"].items():
            t.add_row(name, _fmt(r["median_unallocated_gpu_pct_at_100"]), _fmt(r["mean_unallocated_gpu_pct_at_100"]))
        if "bounds" in results:  # lower bounds, not policies: no placement can do better
            b = results["bounds"]
            t.add_row("floor: every share pod placed", _fmt(b["median_share_floor_pct"]), "")
            t.add_row("floor: any placement", _fmt(b["median_relaxed_floor_pct"]), "")
    else:
        t = Table("POLICY", "AVG JCT h", "P99 JCT h", "AVG WAIT h", "P99 WAIT h", "UTIL", "JAIN", "JAIN (CONTENDED)", "PREEMPT",
                  "PENDING")
        for name, r in results["policies"].items():
            h = lambda v: _fmt(None if v is None else v / 3600)  # noqa: E731
            t.add_row(name, h(r["avg_jct_s"]), h(r["p99_jct_s"]), h(r["avg_wait_s"]), h(r["p99_wait_s"]),
                      _fmt(r["device_utilization"]), _fmt(r["jain_index"]), _fmt(r["jain_index_contended"]), str(r["preemptions"]),
                      str(r["still_pending"]))
    out.print(t)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
