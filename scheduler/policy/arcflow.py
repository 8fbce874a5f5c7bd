"""The arc-flow network of cutting stock for pieces of a device (thousandths), shared by the
simulator's lower bounds (`scheduler/sim/bound.py`) and the suanli policy's share plan
(`scheduler/policy/pairing.py`).

Arc flow (Valério de Carvalho): nodes 0..1000 thousandths in steps of the sizes' common
divisor, an arc i -> i+s per piece size s, loss arcs i -> i+step; every device is one unit of
flow from 0 to 1000, and the flow on the arcs of size s is how many pieces of size s are
placed. Its LP value equals the Gilmore–Gomory bound, with (1000/step) × sizes variables
instead of one per packing pattern; the duals of the per-size rows are the patterns' prices.

Invariant: pure (no I/O, no clock); the same sizes give the same network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MILLI = 1000
# SciPy is imported where it is used: the policy imports this module, and loading SciPy
# (~0.3 s) should not slow every process that imports the policy (the CLI, the API).


class ArcFlow:
    """The network for a set of piece sizes; variables: one per (start node, size) arc, then
    one loss arc per node, then the number of devices z (flow out of node 0). `a_eq`/`b_eq`
    hold flow conservation and z; `placed` (sizes x variables) sums each size's arcs."""

    def __init__(self, sizes: Sequence[int]) -> None:
        from scipy.sparse import coo_matrix

        step = math.gcd(MILLI, *sizes)
        self.sizes = list(sizes)
        self.nodes = MILLI // step + 1
        arcs = [(i, i + s // step, k) for k, s in enumerate(self.sizes) for i in range(self.nodes) if i + s // step < self.nodes]
        arcs += [(i, i + 1, -1) for i in range(self.nodes - 1)]  # loss
        self.arcs = arcs
        self.z = len(arcs)
        rows, cols, vals = [], [], []
        for col, (a, b, _k) in enumerate(arcs):  # flow conservation: in - out = 0 inside
            if a != 0:
                rows.append(a - 1), cols.append(col), vals.append(-1.0)
            if b != self.nodes - 1:
                rows.append(b - 1), cols.append(col), vals.append(1.0)
        out0 = [col for col, (a, _b, _k) in enumerate(arcs) if a == 0]
        rows += [self.nodes - 2] * (len(out0) + 1)  # flow out of node 0 = z
        cols += out0 + [self.z]
        vals += [1.0] * len(out0) + [-1.0]
        self.a_eq = coo_matrix((vals, (rows, cols)), shape=(self.nodes - 1, self.z + 1)).tocsr()
        self.b_eq = np.zeros(self.nodes - 1)
        # per size: the sum of its arcs' flow (pieces of that size placed)
        rows2 = [k for (_a, _b, k) in arcs if k >= 0]
        cols2 = [col for col, (_a, _b, k) in enumerate(arcs) if k >= 0]
        self.placed = coo_matrix(([1.0] * len(cols2), (rows2, cols2)), shape=(len(self.sizes), self.z + 1)).tocsr()


def solve(c: np.ndarray, net: ArcFlow, a_ub: object, b_ub: np.ndarray) -> Any:
    """min c·x on the network with A_ub x <= b_ub, x >= 0 (SciPy HiGHS); the result holds the
    value (`fun`) and the duals of the inequality rows (`ineqlin.marginals`)."""
    from scipy.optimize import linprog

    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=net.a_eq, b_eq=net.b_eq, bounds=(0, None), method="highs")
    if res.status != 0:  # the problems are always feasible and bounded; anything else is a bug
        raise RuntimeError(f"arc-flow LP failed: {res.message}")
    return res
