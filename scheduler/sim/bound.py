"""Lower bounds on the FGD protocol's figure: how little GPU any placement can leave
unallocated when arrived requests reach 100 % of capacity (`suanli simulate --mode fgd --bound`).

Both bounds relax the real problem — they ignore CPU, memory, GPU types and server boundaries
(a k-GPU pod counts as k whole devices anywhere) and know every arrival in advance — so no
policy, online or not, can do better than they say:

- `share_floor_pct` (for policies that place every GPU-share pod): the GPU-share pods arrived by
  100 % must sit on some devices; a device holding shares keeps 1000 minus their sum free, and
  no whole-GPU pod can use that. The least such waste is a cutting-stock problem; its linear
  relaxation (Gilmore–Gomory, solved as an arc-flow network) rounded up to whole devices is
  the floor.
- `relaxed_floor_pct` (for any policy, refusing pods included): the most GPU the arrived pods
  can fill on the cluster's devices, as a linear program over the same network with a pod
  allowed to stay out; 100 % minus that. It is lower than the share floor when leaving a share
  pod out lets a whole-GPU pod use its device (an 810-milli pod out, a 1000-milli pod in:
  +190) — a policy gains that only by refusing a pod that fits, which in this protocol fails it.

Both are linear programs on the arc-flow network of the pod sizes (`scheduler/policy/arcflow.py`,
shared with the suanli policy's share plan).

Invariants: pure (no I/O, no clock); the same arrivals give the same bounds; each bound is
<= the unallocated % of any placement of those arrivals (checked against hand-made instances
and the simulator in tests/unit/test_sim_bound.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix, vstack

from scheduler.policy.arcflow import ArcFlow, solve
from scheduler.sim.model import SimJob

MILLI = 1000


@dataclass(frozen=True)
class Bounds:
    arrived_jobs: int  # jobs up to the one that brings arrived GPU to 100 % of capacity
    share_pods: int
    share_devices: int  # fewest devices the share pods fit on (LP, rounded up)
    share_floor_pct: float | None  # None: the share pods alone need more devices than exist
    relaxed_floor_pct: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {"arrived_jobs": self.arrived_jobs, "share_pods": self.share_pods, "share_devices": self.share_devices,
                "share_floor_pct": self.share_floor_pct, "relaxed_floor_pct": self.relaxed_floor_pct}


def arrived_at_100(arrivals: Iterable[SimJob], total_devices: int) -> list[SimJob]:
    """The arrivals the 100 % point of the allocation curve has seen: through the job whose
    GPU request brings the arrived total to the capacity (as `Simulator.run_fgd` records it)."""
    out: list[SimJob] = []
    arrived = 0.0
    for job in arrivals:
        out.append(job)
        arrived += job.gpu_request
        if arrived >= total_devices:
            break
    return out


def _pieces(jobs: Sequence[SimJob]) -> Counter[int]:
    """Per-device pieces in thousandths: a share pod is one piece of its share, a k-GPU pod k
    pieces of 1000 on every node it spans; CPU-only pods none."""
    pieces: Counter[int] = Counter()
    for j in jobs:
        if j.devices <= 0:
            continue
        if j.device_milli < MILLI:
            pieces[j.device_milli] += 1
        else:
            pieces[MILLI] += j.devices * j.nodes
    return pieces


def min_share_devices(shares: Counter[int]) -> int:
    """Fewest devices the given share pieces (size -> count, sizes < 1000) fit on: the LP
    relaxation of cutting stock, rounded up (a lower bound on the integer optimum)."""
    if not shares:
        return 0
    net = ArcFlow(sorted(shares))
    c = np.zeros(net.z + 1)
    c[net.z] = 1.0
    demand = np.array([shares[s] for s in net.sizes], dtype=float)
    z = float(solve(c, net, -net.placed, -demand).fun)
    return math.ceil(z - 1e-7)


def max_fill(pieces: Counter[int], devices: int) -> float:
    """Most thousandths the pieces (size -> count, any size <= 1000) can fill on `devices`
    devices when any piece may stay out (LP relaxation: an upper bound on any placement)."""
    if not pieces or devices <= 0:
        return 0.0
    net = ArcFlow(sorted(pieces))
    c = np.zeros(net.z + 1)
    c[:net.z] = -(net.placed.T @ np.array(net.sizes, dtype=float))[: net.z]
    cap = np.zeros((1, net.z + 1))
    cap[0, net.z] = 1.0
    a_ub = vstack([net.placed, coo_matrix(cap)]).tocsr()
    b_ub = np.array([pieces[s] for s in net.sizes] + [devices], dtype=float)
    return -float(solve(c, net, a_ub, b_ub).fun)


def fgd_bounds(arrivals: Iterable[SimJob], total_devices: int) -> Bounds:
    """Both floors (module docstring) for one seed's arrivals on a cluster of `total_devices`."""
    jobs = arrived_at_100(arrivals, total_devices)
    pieces = _pieces(jobs)
    shares = Counter({s: n for s, n in pieces.items() if s < MILLI})
    capacity = MILLI * total_devices
    k = min_share_devices(shares)
    share_floor = None if k > total_devices else 100.0 * (MILLI * k - sum(s * n for s, n in shares.items())) / capacity
    fill = min(max_fill(pieces, total_devices), float(capacity))
    return Bounds(len(jobs), sum(shares.values()), k, share_floor, 100.0 * (capacity - fill) / capacity)
