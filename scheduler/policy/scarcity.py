"""How many servers each GPU shape of a target workload fits on now: the C_m of the suanli
policy's scarcity penalty (`scoring.py`'s module docstring has the rule and why λ = 20).

Invariants:
- `ShapeFits.counts` equals a fresh count over the servers given, as long as every change to
  a server is bracketed by `remove(node)` before and `add(node)` after.
- `LiveShapeFits.counts()` (kept by a producer across decisions, passed as
  `Snapshot.shape_fits`) equals a fresh `ShapeFits` count over every server of its capacity
  index, recounting only the servers it was told changed.
- Pure arithmetic on the nodes given: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scheduler.policy.capacity import NodeCap
from scheduler.policy.fragment import MILLI, Workload, _Compiled, _get_cpus, _get_free, _get_shared


def _fit_matrix(nodes: Sequence[NodeCap], type_: str, W: _Compiled) -> np.ndarray:
    """N x M bool: GPU shape m can run on node n now (as `_satisfied` > 0), for servers of one
    type; reads only what that needs (CPU, wholly free devices, shares), once per server."""
    n, u = len(nodes), len(W.thresholds)
    cpu = np.fromiter(map(_get_cpus, nodes), dtype=np.int64, count=n)
    cnt = np.fromiter(map(len, map(_get_free, nodes)), dtype=np.int64, count=n)[:, None]
    sn: list[int] = []
    sv: list[int] = []
    if any(map(_get_shared, nodes)):  # (a C-speed pass; most types share no device)
        for i, shared in enumerate(map(_get_shared, nodes)):
            if shared:
                sn.extend([i] * len(shared))
                sv.extend(shared.values())
    if sn:
        ge = np.minimum(np.array(sv, dtype=np.int64), MILLI)[:, None] >= W.thresholds[None, :]
        flat = (np.array(sn, dtype=np.int64)[:, None] * u + np.arange(u)[None, :]).ravel()
        cnt = cnt + np.bincount(flat, weights=ge.ravel(), minlength=n * u).reshape(n, u).astype(np.int64)
    else:
        cnt = np.broadcast_to(cnt, (n, u))
    # A shape runs if its type is allowed, CPU suffices and k devices have >= its share (a
    # device with a free share > 0 makes the satisfied amount > 0 then).
    return (cpu[:, None] >= W.c[None, :]) & (np.take(cnt, W.u, axis=1) >= W.k[None, :]) & W.allowed(type_)[None, :]


class ShapeFits:
    """Per GPU shape of a workload, on how many servers it fits now: the C_m of the scarcity
    penalty (module docstring), counted over every server given (all types; `servers_by_type`
    maps a type to its servers, whose `type` is that key). When a server changes,
    `remove(node)` before and `add(node)` after keep `counts` equal to a fresh count."""

    def __init__(self, workload: Workload, servers_by_type: Mapping[str, Sequence[NodeCap]]) -> None:
        self._W: _Compiled = workload._compiled  # type: ignore[attr-defined]
        self.counts = np.zeros(len(self._W.c), dtype=np.int64)
        if len(self._W.c):
            for type_, nodes in servers_by_type.items():
                if nodes:
                    self.counts += _fit_matrix(nodes, type_, self._W).sum(axis=0, dtype=np.int64)
        # One server at a time (per placement) in plain Python: numpy's per-call overhead
        # would cost more than the ~M comparisons.
        self._shapes = list(zip(self._W.c.tolist(), self._W.k.tolist(), self._W.u.tolist()))
        self._thresholds = self._W.thresholds.tolist()

    def _row(self, node: NodeCap) -> np.ndarray:
        """The server's row of `_fit_matrix`."""
        nfree, cpus = len(node.free), node.cpus
        shares = [min(v, MILLI) for v in node.shared.values()]
        cnt = [nfree + sum(v >= g for v in shares) for g in self._thresholds] if shares else [nfree] * len(self._thresholds)
        fits = [cpus >= c and cnt[u] >= k for c, k, u in self._shapes]
        return np.array(fits, dtype=bool) & self._W.allowed(node.type)

    @classmethod
    def from_counts(cls, workload: Workload, counts: np.ndarray) -> ShapeFits:
        """Start from counts already made (a copy of them, e.g. `LiveShapeFits.counts()`)."""
        fits = cls(workload, {})
        fits.counts = np.array(counts, dtype=np.int64)
        return fits

    def remove(self, node: NodeCap) -> None:
        """Take one server out of the counts (before it changes)."""
        if self._shapes:
            self.counts -= self._row(node)

    def add(self, node: NodeCap) -> None:
        """Count one server (after it changed)."""
        if self._shapes:
            self.counts += self._row(node)


class LiveShapeFits:
    """`ShapeFits.counts` kept by a producer across decisions (the simulator passes it as
    `Snapshot.shape_fits`): over the servers of `capacity` (type -> policy.capacity
    TypeCapacity, the producer's own index, also passed as `Snapshot.capacity`), told of
    every change with `changed(type, name)` after it. Invariant: `counts()` equals a fresh
    `ShapeFits(workload, every server of capacity).counts`; it recounts only the servers
    changed since its last call (one numpy pass over them), so a decision need not count the
    cluster. Each server's row is kept to take its old contribution out."""

    def __init__(self, workload: Workload, capacity: Mapping[str, Any]) -> None:
        self.workload = workload
        self._W: _Compiled = workload._compiled  # type: ignore[attr-defined]
        self._caps = capacity
        m = len(self._W.c)
        self._counts = np.zeros(m, dtype=np.int64)
        self._rows: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        self._dirty: dict[str, set[str]] = {}
        for type_, cap in capacity.items():
            nodes = list(cap.nodes.values())
            rows = _fit_matrix(nodes, type_, self._W) if nodes and m else np.zeros((len(nodes), m), dtype=bool)
            self._rows[type_] = ({n.name: i for i, n in enumerate(nodes)}, rows)
            self._counts += rows.sum(axis=0, dtype=np.int64)
            self._dirty[type_] = set()

    def changed(self, type_: str, name: str) -> None:
        """Server `name` of `type_` changed (a start or an end on it): recount it when next asked."""
        self._dirty[type_].add(name)

    def counts(self) -> np.ndarray:
        """C_m per GPU shape of the workload, now (a copy: the caller may change it)."""
        if len(self._W.c):
            for type_, names in self._dirty.items():
                if not names:
                    continue
                index, rows = self._rows[type_]
                order = list(names)
                names.clear()
                idx = np.array([index[n] for n in order], dtype=np.intp)
                nodes = self._caps[type_].nodes
                new = _fit_matrix([nodes[n] for n in order], type_, self._W)
                self._counts += new.sum(axis=0, dtype=np.int64) - rows[idx].sum(axis=0, dtype=np.int64)
                rows[idx] = new
        return self._counts.copy()
