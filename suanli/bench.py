"""Benchmarks (`suanli bench …`, `make bench`). Speed is measured here, never in tests.

Each benchmark reports its figures and a ratio against a baseline measured in the same
run on the same synthetic input, because shared 2-core machines are noisy:
- scheduler: the suanli policy's full `decide()` cycle vs the first-fit FIFO baseline on
  the same snapshot (and the floor every FIFO policy pays: sorting the queue).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

from scheduler.policy import decide
from scheduler.policy.fifo import decide as fifo_decide
from scheduler.policy.fragment import Workload
from scheduler.types import JobRequest, NodeView, Placement, PolicyConfig, Quota, Resources, RunningJob, ShareNode, Snapshot, project_key

TYPES = ("nvidia-a100-80g", "ascend-910b")


def synthetic_snapshot(nodes: int, devices_per_node: int, pending: int, full: bool, seed: int = 1) -> Snapshot:
    """Two accelerator types (half the servers each, 8 racks), 20 orgs in 2 pools with
    shares, decayed usage, guarantees, limits and funds; job sizes 1–64 devices (above one
    server: gangs of whole servers); 1 job in 5 accepts both types. `full`: every server runs
    one job of a random org, ending at random times within 12 hours."""
    rng = random.Random(seed)
    orgs = [f"org{i}" for i in range(20)]
    pool_of = {o: ("universities" if i < 10 else "enterprises") for i, o in enumerate(orgs)}
    views, running = [], []
    for i in range(nodes):
        t = TYPES[i % 2]
        views.append(NodeView(f"n{i:05d}", t, devices_per_node, () if full else tuple(range(devices_per_node)),
                              128, 1 << 20, True, f"rack{i % 8}"))
        if full:
            org = rng.choice(orgs)
            started = -rng.uniform(0, 36000)
            running.append(RunningJob(100_000 + i, org, t, (Placement(views[-1].name, tuple(range(devices_per_node))),),
                                      started, int(-started + rng.uniform(60, 43200)), started - 60, "default",
                                      pool_of[org]))
    sizes = [1, 1, 1, 2, 2, 4, 4, 8, 8, 16, 32, 64]
    jobs = []
    for j in range(pending):
        size = rng.choice(sizes)
        per_node = min(size, devices_per_node)
        n_nodes = math.ceil(size / per_node)
        types = (TYPES[j % 2],) if j % 5 else TYPES
        org = orgs[j % 20]
        jobs.append(JobRequest(j + 1, org, Resources(types, per_node, n_nodes, 2, 4096), float(-j), 3600 * rng.choice([1, 2, 4, 12]),
                               "default", pool_of[org], rng.choice(["normal", "normal", "high", "low"])))
    tree = [ShareNode("center", None, 1), ShareNode("pool:universities", "center", 2), ShareNode("pool:enterprises", "center", 1)]
    for o in orgs:
        tree.append(ShareNode(f"org:{o}", f"pool:{pool_of[o]}", rng.randint(1, 5)))
        tree.append(ShareNode(project_key(o, "default"), f"org:{o}", 1, rng.uniform(0, 1e6)))
    quotas = {(o, t): Quota(guaranteed=16, limit=nodes * devices_per_node // 4) for o in orgs[:5] for t in TYPES}
    # Every pending job is examined (no queue-depth cut), so a cycle is a full decision.
    return Snapshot(tuple(views), tuple(jobs), tuple(running), tuple(tree), quotas, {},
                    prices={TYPES[0]: 1200, TYPES[1]: 800}, funds={o: 10**12 for o in orgs},
                    config=PolicyConfig(queue_depth=pending))


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_scheduler(nodes: int = 1000, devices_per_node: int = 8, pending: int = 10000, repeat: int = 3) -> dict[str, Any]:
    """- cycle_s: one decide() over every pending job on an empty cluster;
    - cycle_s_full_cluster: the same with every device busy (every job waits and is explained);
    - placements_per_s: jobs placed per second when every job considered fits (the queue is
      the jobs the empty-cluster cycle started, decided again on the empty cluster)."""
    empty = synthetic_snapshot(nodes, devices_per_node, pending, full=False)
    full = synthetic_snapshot(nodes, devices_per_node, pending, full=True)
    cycle_s, decisions = _best_of(lambda: decide(empty, 0.0), repeat)
    cycle_full_s, _ = _best_of(lambda: decide(full, 0.0), repeat)
    started = {s.job_id for s in decisions.starts}
    fits = replace(empty, pending=tuple(j for j in empty.pending if j.id in started))
    place_s, placed = _best_of(lambda: decide(fits, 0.0), repeat)
    # The live placement (FGD less the scarcity penalty) once the center has a history: the
    # target workload is the pending jobs' own shapes, as `recent_workload` would read them.
    workload = Workload.from_requests((j.resources.cpus_per_node, j.resources.device_milli, j.resources.devices_per_node,
                                       j.resources.accelerator_types) for j in empty.pending)
    empty_w = replace(empty, workload=workload)
    cycle_w_s, decisions_w = _best_of(lambda: decide(empty_w, 0.0), repeat)
    fits_w = replace(empty_w, pending=tuple(j for j in empty.pending if j.id in {s.job_id for s in decisions_w.starts}))
    place_w_s, placed_w = _best_of(lambda: decide(fits_w, 0.0), repeat)
    floor_s, _ = _best_of(lambda: sorted(empty.pending, key=lambda j: (j.submitted_at, j.id)), repeat)
    fifo_s, fifo = _best_of(lambda: fifo_decide(empty, 0.0), repeat)
    return {
        "benchmark": "scheduler",
        "policy": "suanli (fair share, backfill, reclaim)",
        "nodes": nodes,
        "devices_per_node": devices_per_node,
        "pending": pending,
        "placed": len(decisions.starts),
        "placements_per_s": round(len(placed.starts) / place_s, 1) if place_s else None,
        "cycle_s": round(cycle_s, 4),
        "cycle_s_full_cluster": round(cycle_full_s, 4),
        "placed_fgd": len(decisions_w.starts),
        "placements_per_s_fgd": round(len(placed_w.starts) / place_w_s, 1) if place_w_s else None,
        "cycle_s_fgd": round(cycle_w_s, 4),
        "baseline_fifo_cycle_s": round(fifo_s, 4),
        "baseline_fifo_placed": len(fifo.starts),
        "ratio_cycle_to_fifo": round(cycle_s / fifo_s, 2) if fifo_s else None,
        "baseline_sort_s": round(floor_s, 5),
    }


def synthetic_trace(jobs: int, servers: int, devices_per_node: int = 8, load: float = 0.9, seed: int = 7,
                    tenants: int = 20) -> tuple[Any, list[Any]]:
    """A multi-tenant workload for the simulator: Poisson arrivals sized so the offered load
    is `load` × capacity, log-uniform durations (1 min – 12 h), sizes 1–16 devices (whole
    servers above 8), 20 tenants in 2 pools with unequal shares, two of them guaranteed, and
    skewed demand (tenant k submits in proportion to 1/(k+1), as a few groups dominate real
    centers)."""
    from scheduler.sim.model import SimCluster, SimJob, SimServer, SimTenant

    rng = random.Random(seed)
    cluster = SimCluster(
        servers=tuple(SimServer(f"s{i:05d}", TYPES[i % 2], devices_per_node, 128_000, 1 << 20, f"rack{i % 16}") for i in range(servers)),
        tenants=tuple(SimTenant(f"t{k:02d}", "universities" if k % 2 else "enterprises", 1 + k % 3) for k in range(tenants)),
        pool_shares={"universities": 2.0, "enterprises": 1.0},
        quotas={(f"t{k:02d}", t): Quota(guaranteed=devices_per_node * 4) for k in (0, 1) for t in TYPES},
    )
    sizes = [1, 1, 1, 1, 2, 2, 4, 4, 8, 16]
    weights = [1 / (k + 1) for k in range(tenants)]
    durations = [math.exp(rng.uniform(math.log(60), math.log(12 * 3600))) for _ in range(jobs)]
    mean_work = sum(durations) / jobs * sum(sizes) / len(sizes)
    rate = load * servers * devices_per_node / mean_work  # jobs per second
    t = 0.0
    out = []
    for i in range(jobs):
        t += rng.expovariate(rate)
        size = rng.choice(sizes)
        per_node = min(size, devices_per_node)
        types = (TYPES[i % 2],) if i % 4 else TYPES
        out.append(SimJob(i + 1, t, durations[i], per_node, math.ceil(size / per_node), accelerators=types,
                          tenant=f"t{rng.choices(range(tenants), weights)[0]:02d}", cpu_milli=4000 * per_node, memory_mib=16384 * per_node,
                          priority_class=rng.choice(["normal", "normal", "normal", "high", "low"])))
    return cluster, out


def bench_simulate(jobs: int = 100_000, servers: int = 1000, policy: str = "suanli", load: float = 0.9) -> dict[str, Any]:
    """Wall time of a time-mode replay of `jobs` synthetic jobs on `servers` servers (a 10 s
    scheduling cycle, as `suanli simulate` uses by default), with the replay's throughput as
    the figure of merit (jobs/s) and FIFO's on the same input as the baseline."""
    from scheduler.sim.run import Run, simulate

    cluster, trace = synthetic_trace(jobs, servers, load=load)
    out: dict[str, Any] = {"benchmark": "simulate", "jobs": jobs, "servers": servers, "offered_load": load}
    for name in (policy, "fifo"):
        t0 = time.perf_counter()
        res = simulate(Run("time", cluster, trace, time_limit="overestimate:2", cycle_s=10.0), [name])["policies"][name]
        wall = time.perf_counter() - t0
        out[name] = {"wall_s": round(wall, 2), "jobs_per_s": round(jobs / wall, 1), "decisions": res["decisions"],
                     "avg_jct_s": res["avg_jct_s"], "p99_wait_s": res["p99_wait_s"], "jain_index": res["jain_index"],
                     "device_utilization": res["device_utilization"]}
    out["ratio_wall_to_fifo"] = round(out[policy]["wall_s"] / out["fifo"]["wall_s"], 2)
    return out
