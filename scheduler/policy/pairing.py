"""Which GPU shares go together on a device: the suanli policy's share plan.

A device holding GPU-share pods keeps 1000 minus their sum free, and no whole-GPU pod can use
that; how much is lost depends on which shares end up together (two 470s leave 60, a 470
with a 320 leaves 210 that only the rare small pods fill, while the 320 would have completed a
650). FGD scores one placement at a time by the free share it leaves and fills the first
device that fits (the 470 on the lone 320); the plan keeps devices on the combinations an
optimal packing of the *target workload* uses.

The plan is the cutting-stock linear program of the workload's share sizes (each size in
proportion to its popularity; minimise devices; Gilmore–Gomory, solved on the arc-flow
network of `arcflow.py`, as the simulator's bounds are): its dual value y_s per size (1 for a
size that needs a device of its own; 1/2 for sizes that pair; ...) prices every packing
pattern, and the patterns an optimal packing may use are exactly those worth 1 (zero reduced
cost). A share of size s may
join a partly used device holding shares C only if C + s can still be completed to such a
pattern:

    y(C) + y_s + K(1000 - sum C - s) >= 1 - EPS,

K(r) the most dual value that fits in r (an unbounded knapsack over the workload's sizes). A
wholly free device is always allowed, and where no device passes (none free, none in plan)
every device that fits is allowed again, so the plan never turns away a pod that fits. Among
the allowed devices FGD less the scarcity penalty decides as before (`scoring.py`).

Sizes outside the workload take the value of the largest workload size not above them
(rounding down keeps y dual-feasible: any pattern stays a pattern when a piece shrinks).

Measured on the Alibaba v2023 default list, FGD protocol, seeds 42-44 (docs/benchmarks.md):
the devices the placed share pods use exceed their optimal packing (LP) by 18 / 28 / 23
instead of 35 / 39 / 41; median unallocated GPU over seeds 42-51 4.13 % instead of 4.37 %.

Invariants: pure (no I/O, no clock, no randomness); the plan depends only on the workload;
`allows` is True for an empty device and for any C + s that is a sub-pattern of an optimal
pattern of the LP.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

import numpy as np

from scheduler.policy.arcflow import ArcFlow, solve

MILLI = 1000
EPS = 1e-6


class SharePlan:
    """The duals y and the knapsack K of a workload's share sizes (module docstring)."""

    def __init__(self, weights: Counter[int]) -> None:
        self.sizes = sorted(s for s, w in weights.items() if 0 < s < MILLI and w > 0)
        self.y: dict[int, float] = {}
        self.active = bool(self.sizes)
        if not self.active:
            return
        self.y = dict(zip(self.sizes, _duals(self.sizes, [weights[s] for s in self.sizes])))
        k = [0.0] * (MILLI + 1)  # K(r): most dual value fitting in r thousandths
        for r in range(1, MILLI + 1):
            best = k[r - 1]
            for s in self.sizes:
                if s > r:
                    break
                best = max(best, k[r - s] + self.y[s])
            k[r] = best
        self.knapsack = k

    def value(self, size: int) -> float:
        """y of a share size; a size outside the workload takes the largest size below it."""
        v = self.y.get(size)
        if v is not None:
            return v
        i = bisect.bisect_right(self.sizes, size)
        return self.y[self.sizes[i - 1]] if i else 0.0

    def allows(self, content: Iterable[int], size: int) -> bool:
        """Whether a share of `size` may join a device holding the shares `content`."""
        used = size
        worth = self.value(size)
        for c in content:
            used += c
            worth += self.value(c)
        if used > MILLI:
            return False
        return worth + self.knapsack[MILLI - used] >= 1.0 - EPS


def _duals(sizes: list[int], weights: list[float]) -> list[float]:
    """Dual values of the demand rows of min devices s.t. pieces of each size >= demand, on
    the arc-flow network (`arcflow.py`); the demand's scale does not change them."""
    net = ArcFlow(sizes)
    total = sum(weights)
    demand = np.array([1000.0 * w / total for w in weights])
    c = np.zeros(net.z + 1)
    c[net.z] = 1.0
    res = solve(c, net, -net.placed, -demand)
    return [max(0.0, -float(m)) for m in res.ineqlin.marginals]


def share_plan(workload) -> SharePlan:  # type: ignore[no-untyped-def]
    """The plan of a `fragment.Workload` (made once per workload, kept on it)."""
    plan = getattr(workload, "_share_plan", None)
    if plan is None:
        weights: Counter[int] = Counter()
        for s in workload.shapes:
            if s.num_gpu == 1 and 0 < s.gpu_milli < MILLI:
                weights[s.gpu_milli] += s.weight
        plan = SharePlan(weights)
        object.__setattr__(workload, "_share_plan", plan)
    return plan


class DeviceShares:
    """The GPU shares each partly used device holds: (server, device) -> share sizes.

    Built from the running jobs (`of`), or kept by a producer (the simulator) as jobs start
    and end and passed as `Snapshot.device_shares`, so a decision need not read every running
    job; a decision adds its own starts to a `fork()`, which leaves its base as it was.
    Invariant: a kept one equals `DeviceShares.of(running)` of the producer's running jobs."""

    def __init__(self, base: DeviceShares | None = None) -> None:
        self._held: dict[tuple[str, int], list[int]] = {}
        self._base = base

    @classmethod
    def of(cls, running: Iterable) -> DeviceShares:  # type: ignore[type-arg]
        """From running jobs (`scheduler.types.RunningJob`): those holding a share of a device."""
        out = cls()
        for j in running:
            if j.device_milli < MILLI:
                for p in j.placements:
                    for d in p.devices:
                        out.add(p.node, d, j.device_milli)
        return out

    def get(self, node: str, device: int) -> list[int] | tuple[()]:
        held = self._held.get((node, device))
        if held is not None:
            return held
        return self._base.get(node, device) if self._base is not None else ()

    def add(self, node: str, device: int, milli: int) -> None:
        self._held[(node, device)] = [*self.get(node, device), milli]

    def remove(self, node: str, device: int, milli: int) -> None:
        held = list(self.get(node, device))
        held.remove(milli)
        self._held[(node, device)] = held

    def fork(self) -> DeviceShares:
        return DeviceShares(self)

    def as_dict(self) -> dict[tuple[str, int], list[int]]:
        """Every device holding a share, with its shares sorted (for tests)."""
        keys = set(self._held) | (set(self._base.as_dict()) if self._base is not None else set())
        out = {k: sorted(self.get(*k)) for k in keys}
        return {k: v for k, v in out.items() if v}
