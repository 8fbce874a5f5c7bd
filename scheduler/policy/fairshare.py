"""Slurm's Fair Tree fair-share factor over the tenancy tree (pure: no I/O, no clock).

The tree is center (root) -> pool -> org -> project, but nothing here depends on the depth:
a node with no children is a leaf (a project; the root itself is never one), every other
non-root node is an inner node (an "account" in Slurm's words; leaves are its "users").
So a pool or org that has no projects yet would be ranked as a leaf: callers leave it out.
Usage is the decayed usage of `quota.usage`, given on leaves; an inner node's usage is the
sum of its descendants' leaf usage (any `usage` given on an inner node is ignored).

Level Fairshare (Slurm: https://slurm.schedmd.com/fair_tree.html). For a non-root node c
with parent p and siblings (the children of p, c included):

    S  = shares_c / sum(shares of p's children)        "Norm Shares"
    U  = usage_c  / sum(usage of p's children)         "Effective Usage"; 0 when that sum is 0
    LF = S / U                                         "Level FS"
    LF = 0     when S == 0  (no shares: it never outranks a sibling that has shares)
    LF = +inf  when U == 0 and S > 0  (no usage: ahead of every sibling that has usage)

S == 0 is tested first, as Slurm's `_calc_assoc_fs` does: a zero-share node ranks last among
its siblings whatever its usage, and zero-share siblings tie with each other. A node's LF
compares it only to its own siblings: LF = 1.8 means its fraction of its parent's usage is
1/1.8 of its fraction of its parent's shares, whatever happens elsewhere in the tree.

Ranking (Slurm's `_calc_tree_fs`), depth first:
1. rank = counter = N, the number of leaves.
2. Sort the root's children by LF descending (ties: leaves before inner nodes, then by id).
3. Visit them in that order. A leaf gets the current rank (see ties) and the counter moves
   down by one. An inner node is recursed into: its children are sorted the same way and
   visited, before the inner node's next sibling is visited.
4. FairShare factor = rank / N: the first leaf visited gets 1.0, every factor is in (0, 1].

Ties (exact float equality of LF; so it is deterministic, and ties between cousins whose LFs
are equal only mathematically may be missed by one rounding, exactly as in Slurm):
- A node is tied when its LF equals that of the node just before it in the same sorted
  list (the first node of a list is tied when the list was entered tied, see below). A
  tied leaf reuses the rank last given; an untied leaf gets rank = counter; either way the
  counter moves down by one. So k tied sibling leaves all get the group's highest rank and
  the next leaf gets that rank - k.
- Sibling inner nodes with equal LF are merged: their children (whose LFs were computed
  against their own parents) are pooled, sorted and visited together as one list.
- An inner node tied with the leaf just before it (leaves sort first on equal LF) enters
  its list tied, so the first leaf reached inside it reuses that leaf's rank. This is
  Slurm's `account_tied`; it keeps "equal LF at a level => equal standing" across kinds.
- Remaining order ties are broken by node id, so the output never depends on input order.

Invariants (tested in tests/unit/test_fairshare.py):
- If siblings A and B have LF_A > LF_B, every leaf under A (or A itself, if a leaf) has a
  strictly higher factor than every leaf under B: a level is decided before anything below
  it is looked at (the "fair tree" property; no subtree can buy its way past a sibling).
- Every factor is in (0, 1]; the first leaf visited has exactly 1.0; factor == rank / N.
- The result depends only on the set of nodes, not on their order in the input.
- Only ratios among siblings matter: scaling all of one parent's children's shares by a
  factor (exactly, e.g. integer shares x 10) changes nothing.
- No usage anywhere: every leaf whose path has positive shares ties at rank N (factor 1.0).
- A zero-share node ranks below all its siblings that have shares.

Cost: O(n log n) for n nodes (one sort of each sibling list, linear passes otherwise); the
walks are iterative, so depth is not limited by Python's recursion limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.types import ShareNode  # shares >= 0 weigh a node against its siblings; usage is read on leaves

__all__ = ["FairShare", "ShareNode", "fair_tree", "level_fairshares"]


@dataclass(frozen=True)
class FairShare:
    """A leaf's Fair Tree result.

    factor = rank / N. `level_fs` is ((node id, Level FS), ...) for each node on the path
    from the root's child down to the leaf itself, so a caller can explain the rank level
    by level.
    """

    factor: float
    rank: int
    level_fs: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _Tree:
    """The validated tree: children sorted by id, nodes in breadth-first order from root."""

    root: str
    nodes: dict[str, ShareNode]
    children: dict[str, list[str]]  # inner nodes only (root included); leaves are absent
    bfs: list[str]


def fair_tree(nodes: Sequence[ShareNode], root: str) -> dict[str, FairShare]:
    """Slurm's Fair Tree: the fair-share factor of every leaf, keyed by leaf id.

    Raises ValueError on a malformed tree (duplicate ids, not exactly one parentless node,
    `root` not that node, a missing parent, a cycle) or on shares/usage that are negative
    or not finite. A root without children gives {}.
    """
    tree = _validate(nodes, root)
    lf = _level_fs(tree)
    ranks = _rank(tree, lf)
    n_leaves = len(ranks)

    # Paths of (id, LF) from the root's child down, built top-down: BFS order has a parent's
    # path ready before its children need it.
    inner = tree.children
    paths: dict[str, tuple[tuple[str, float], ...]] = {root: ()}
    result: dict[str, FairShare] = {}
    for parent in tree.bfs:
        if parent not in inner:
            continue
        base = paths[parent]
        for kid in inner[parent]:
            path = base + ((kid, lf[kid]),)
            if kid in inner:
                paths[kid] = path
            else:
                rank = ranks[kid]
                result[kid] = FairShare(rank / n_leaves, rank, path)
    return result


def level_fairshares(nodes: Sequence[ShareNode], root: str) -> dict[str, float]:
    """The Level FS of every non-root node (leaves and inner nodes), keyed by id: what
    `describe` shows next to a node's siblings. Same validation as `fair_tree`."""
    return _level_fs(_validate(nodes, root))


# ---------------------------------------------------------------------------------------------
# Validation


def _validate(nodes: Sequence[ShareNode], root: str) -> _Tree:
    by_id: dict[str, ShareNode] = {}
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    inf = math.inf
    for node in nodes:  # one pass: this is most of the cost on a big tree
        node_id, parent = node.id, node.parent
        if node_id in by_id:
            raise ValueError(f"duplicate node id {node_id!r}")
        by_id[node_id] = node
        # Chained comparisons are False for NaN; inf would make S or U inf/inf = NaN.
        if not (0.0 <= node.shares < inf):
            raise ValueError(f"node {node_id!r}: shares must be finite and >= 0, got {node.shares!r}")
        if not (0.0 <= node.usage < inf):
            raise ValueError(f"node {node_id!r}: usage must be finite and >= 0, got {node.usage!r}")
        if parent is None:
            roots.append(node_id)
        elif parent in children:
            children[parent].append(node_id)
        else:
            children[parent] = [node_id]

    if len(roots) != 1:
        raise ValueError(
            f"the tree must have exactly one root (node without parent), found {len(roots)}: {sorted(roots)}"
        )
    if roots[0] != root:
        raise ValueError(f"root {root!r} is not the tree's parentless node {roots[0]!r}")
    for parent, kids in children.items():
        if parent not in by_id:
            raise ValueError(f"node {min(kids)!r} has parent {parent!r}, which is not in the tree")
        kids.sort()  # sums and visits never depend on input order

    bfs = [root]
    for node_id in bfs:  # grows while iterating: a breadth-first walk
        if node_id in children:
            bfs.extend(children[node_id])
    if len(bfs) != len(by_id):
        # Every node has one parent and the one parentless node is the root, so any node the
        # walk missed sits on (or hangs below) a parent cycle: follow parents to find it.
        reached = set(bfs)
        at = min(i for i in by_id if i not in reached)
        seen: dict[str, int] = {}  # id -> position on the walk up
        while at not in seen:
            seen[at] = len(seen)
            at = by_id[at].parent  # type: ignore[assignment]  # never None: root is reached
        walk = list(seen)
        cycle = walk[seen[at]:] + [at]
        raise ValueError(f"the tree has a parent cycle: {' -> '.join(cycle)}")
    return _Tree(root, by_id, children, bfs)


# ---------------------------------------------------------------------------------------------
# Level Fairshare


def _level_fs(tree: _Tree) -> dict[str, float]:
    nodes, inner, fsum, inf = tree.nodes, tree.children, math.fsum, math.inf
    # Subtree usage, bottom-up (reverse BFS visits children before parents). fsum keeps each
    # sum correctly rounded, so it does not depend on the order of the terms.
    usage: dict[str, float] = {}
    for node_id in reversed(tree.bfs):
        usage[node_id] = fsum([usage[k] for k in inner[node_id]]) if node_id in inner else nodes[node_id].usage

    lf: dict[str, float] = {}
    for parent in tree.bfs:  # BFS order only so the returned dict's order is deterministic
        if parent not in inner:
            continue
        kids = inner[parent]
        shares = [nodes[k].shares for k in kids]
        share_sum, usage_sum = fsum(shares), usage[parent]
        for kid, kid_shares in zip(kids, shares):
            # S and U are formed as Slurm forms them (shares_norm, usage_efctv) so LF matches
            # the Level FS column of `sshare`, float for float where the inputs match.
            s = kid_shares / share_sum if share_sum > 0.0 else 0.0
            u = usage[kid] / usage_sum if usage_sum > 0.0 else 0.0
            lf[kid] = 0.0 if s == 0.0 else inf if u == 0.0 else s / u
    return lf


# ---------------------------------------------------------------------------------------------
# Ranking


def _rank(tree: _Tree, lf: dict[str, float]) -> dict[str, int]:
    inner = tree.children

    def sort(ids: list[str]) -> list[str]:
        # LF descending; on equal LF leaves first (Slurm's `_cmp_level_fs`: needed so a tied
        # inner node can inherit the leaf's rank), then id for determinism.
        return sorted(ids, key=lambda i: (-lf[i], i in inner, i))

    n_leaves = sum(1 for i in tree.nodes if i != tree.root and i not in inner)
    ranks: dict[str, int] = {}
    counter = n_leaves  # Slurm's `rnt`: moves down by one per leaf visited
    rank = n_leaves  # Slurm's `rank`: the rank last given; reused by tied leaves
    # Frames: (sorted sibling list, possibly pooled from merged inner nodes; next position;
    # LF of the node before that position; whether the list inherits a tie from above).
    stack: list[tuple[list[str], int, float, bool]] = [(sort(list(inner.get(tree.root, ()))), 0, math.nan, False)]
    while stack:
        order, i, prev, tied_in = stack.pop()
        while i < len(order):
            node_id = order[i]
            level = lf[node_id]
            # The first of a list inherits its parent's tie; the rest tie with their predecessor.
            tied = tied_in if i == 0 else level == prev
            prev = level
            if node_id not in inner:
                if not tied:
                    rank = counter
                ranks[node_id] = rank
                counter -= 1
                i += 1
                continue
            # Inner node: merge the following inner siblings with the same LF, pool their
            # children, and descend into the pool before going on with this list.
            end = i + 1
            while end < len(order) and order[end] in inner and lf[order[end]] == level:
                end += 1
            pooled = [kid for merged in order[i:end] for kid in inner[merged]]
            stack.append((order, end, prev, tied_in))
            stack.append((sort(pooled), 0, math.nan, tied))
            break
    return ranks


def classic(nodes: Sequence[ShareNode], root: str) -> dict[str, FairShare]:
    """Slurm's classic fair-share factor (PriorityFlags=NO_FAIR_TREE), for the slurm-like
    baseline:

        S   = product of normalized shares along the path (shares / siblings' shares)
        UA  = the node's usage / the root's usage (0 when nothing was used)
        UE  = UA + (UE_parent - UA) * S_local        effective usage; UE of the root's children = UA
        F   = 2 ** (-UE / S)                        (0 when S == 0)

    `rank` is the position by factor (N = best), so `factor` keeps classic's values while
    `rank` orders like Fair Tree does."""
    tree = _validate(nodes, root)
    by_id = tree.nodes
    usage: dict[str, float] = {}
    for node_id in reversed(tree.bfs):
        kids = tree.children.get(node_id, ())
        usage[node_id] = math.fsum(usage[k] for k in kids) if kids else by_id[node_id].usage
    total = usage[root]
    norm: dict[str, float] = {root: 1.0}
    eff: dict[str, float] = {root: 1.0 if total > 0 else 0.0}
    factors: dict[str, float] = {}
    for node_id in tree.bfs:
        kids = tree.children.get(node_id, ())
        sib_shares = math.fsum(by_id[k].shares for k in kids)
        for k in kids:
            local = by_id[k].shares / sib_shares if sib_shares > 0 else 0.0
            norm[k] = norm[node_id] * local
            ua = usage[k] / total if total > 0 else 0.0
            eff[k] = ua if node_id == root else ua + (eff[node_id] - ua) * local
            if not tree.children.get(k):
                factors[k] = 2.0 ** (-eff[k] / norm[k]) if norm[k] > 0 else 0.0
    ordered = sorted(factors, key=lambda k: (-factors[k], k))
    n = len(ordered)
    return {k: FairShare(factors[k], n - i, ((k, factors[k]),)) for i, k in enumerate(ordered)}
