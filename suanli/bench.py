"""Benchmarks (`suanli bench …`, `make bench`). Speed is measured here, never in tests.

Each benchmark reports its figures and a ratio against a baseline measured in the same
run on the same synthetic input, because shared 2-core machines are noisy:
- scheduler: the policy's full `decide()` cycle vs the floor every FIFO policy pays
  (sorting the pending jobs by submit time), on an empty and on a full cluster.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from scheduler.policy import decide
from scheduler.types import JobRequest, NodeView, Resources, Snapshot

TYPES = ("nvidia-a100-80g", "ascend-910b")


def synthetic_snapshot(nodes: int, devices_per_node: int, pending: int, full: bool, seed: int = 1) -> Snapshot:
    """Two accelerator types (half the servers each), 20 orgs in 2 pools, job sizes 1–64
    devices (sizes above one server become multi-server gangs of whole servers)."""
    rng = random.Random(seed)
    views = tuple(
        NodeView(
            name=f"n{i:05d}",
            accelerator_type=TYPES[i % 2],
            device_count=devices_per_node,
            free_devices=() if full else tuple(range(devices_per_node)),
            free_cpus=0 if full else 128,
            free_memory_mb=0 if full else 1 << 20,
        )
        for i in range(nodes)
    )
    sizes = [1, 1, 1, 2, 2, 4, 4, 8, 8, 16, 32, 64]
    jobs = []
    for j in range(pending):
        size = rng.choice(sizes)
        per_node = min(size, devices_per_node)
        n_nodes = math.ceil(size / per_node)
        types = (TYPES[j % 2],) if j % 5 else TYPES
        jobs.append(JobRequest(j + 1, f"org{j % 20}", Resources(types, per_node, n_nodes, 2, 4096), float(j), 3600))
    return Snapshot(views, tuple(jobs))


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_scheduler(nodes: int = 1000, devices_per_node: int = 8, pending: int = 10000, repeat: int = 3) -> dict[str, Any]:
    empty = synthetic_snapshot(nodes, devices_per_node, pending, full=False)
    full = synthetic_snapshot(nodes, devices_per_node, pending, full=True)
    cycle_s, decisions = _best_of(lambda: decide(empty, 0.0), repeat)
    cycle_full_s, _ = _best_of(lambda: decide(full, 0.0), repeat)
    floor_s, _ = _best_of(lambda: sorted(empty.pending, key=lambda j: (j.submitted_at, j.id)), repeat)
    placed = len(decisions.starts)
    return {
        "benchmark": "scheduler",
        "policy": "fifo-first-fit",
        "nodes": nodes,
        "devices_per_node": devices_per_node,
        "pending": pending,
        "placed": placed,
        "placements_per_s": round(placed / cycle_s, 1) if cycle_s else None,
        "cycle_s": round(cycle_s, 4),
        "cycle_s_full_cluster": round(cycle_full_s, 4),
        "baseline_sort_s": round(floor_s, 5),
        "ratio_cycle_to_sort": round(cycle_s / floor_s, 1) if floor_s else None,
    }
