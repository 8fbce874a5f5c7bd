"""Slurm's Fair Tree (`scheduler.policy.fairshare`): a published `sshare` table, the Fair
Tree properties over random trees (and against a literal transcription of Slurm's
recursive `_calc_tree_fs`), classic sanity cases and malformed trees."""

from __future__ import annotations

import functools
import math
import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy.fairshare import FairShare, ShareNode, fair_tree, level_fairshares


def n(id: str, parent: str | None, shares: float = 1.0, usage: float = 0.0) -> ShareNode:
    return ShareNode(id, parent, float(shares), float(usage))


def children_of(nodes: list[ShareNode]) -> dict[str, list[str]]:
    kids: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        if node.parent is not None:
            kids[node.parent].append(node.id)
    return kids


def leaves_under(kids: dict[str, list[str]], node: str) -> list[str]:
    if node not in kids:
        return [node]
    return [leaf for k in kids[node] for leaf in leaves_under(kids, k)]


# --- A published sshare table ---------------------------------------------------------------

# EPFL SCITAS's published `sshare` output (Fair Tree): account scitas-ge, 23 users with 1 raw
# share each (Norm Shares 0.043478), account RawUsage 1376.
EPFL_USED = {"eroche": (344, 0.173913), "qubit": (351, 0.170455), "rezzonic": (681, 0.087848)}
EPFL_IDLE = [f"idle{i:02d}" for i in range(20)]


def epfl_tree() -> list[ShareNode]:
    nodes = [n("center", None), n("scitas-ge", "center")]
    nodes += [n(user, "scitas-ge", 1, raw) for user, (raw, _) in EPFL_USED.items()]
    nodes += [n(user, "scitas-ge", 1, 0) for user in EPFL_IDLE]
    return nodes


def test_epfl_sshare_level_fs() -> None:
    """Invariant: LF = (1/23) / (raw/1376) reproduces sshare's Level FS column (to 1e-3: the
    published raw usage is rounded); users without usage have LF = inf."""
    result = fair_tree(epfl_tree(), "center")
    assert sum(raw for raw, _ in EPFL_USED.values()) == 1376
    for user, (_, published) in EPFL_USED.items():
        leaf_id, lf = result[user].level_fs[-1]
        assert leaf_id == user
        assert math.isclose(lf, published, rel_tol=1e-3)
    assert all(result[u].level_fs[-1][1] == math.inf for u in EPFL_IDLE)
    assert result["eroche"].level_fs[0] == ("scitas-ge", 1.0)  # an only child: S = U = 1


def test_epfl_sshare_ranks() -> None:
    """Invariant: the 20 idle users tie at rank N = 23 (factor 1.0); then eroche, qubit,
    rezzonic get consecutive ranks N-20, N-21, N-22 (the tie group uses up 20 ranks)."""
    result = fair_tree(epfl_tree(), "center")
    big_n, k = 23, len(EPFL_IDLE)
    assert len(result) == big_n
    assert {result[u].rank for u in EPFL_IDLE} == {big_n}
    assert all(result[u].factor == 1.0 for u in EPFL_IDLE)
    assert [result[u].rank for u in ("eroche", "qubit", "rezzonic")] == [big_n - k, big_n - k - 1, big_n - k - 2]
    assert result["rezzonic"].factor == 1 / 23


# --- Random trees -----------------------------------------------------------------------------


@st.composite
def trees(draw: st.DrawFn) -> list[ShareNode]:
    """A random tree of depth 2-4 below the root "r", with small integer shares and usage
    (so ties, zero shares and zero usage are common) or, sometimes, arbitrary usage."""
    depth = draw(st.integers(2, 4))
    usage = st.one_of(st.integers(0, 3).map(float), st.floats(0, 1e6))
    shares = st.sampled_from([0.0, 1.0, 1.0, 2.0, 3.0, 5.0])
    nodes = [ShareNode("r", None, 1.0)]
    frontier = ["r"]
    for level in range(1, depth + 1):
        nxt = []
        for parent in frontier:
            for i in range(draw(st.integers(1, 4))):
                node_id = f"{parent}.{i}"
                # The first child of an inner node is inner, so the tree reaches `depth`.
                inner = level < depth and (i == 0 or draw(st.booleans()))
                nodes.append(ShareNode(node_id, parent, draw(shares), 0.0 if inner else draw(usage)))
                if inner:
                    nxt.append(node_id)
        frontier = nxt
    return nodes


@settings(max_examples=300, deadline=None)
@given(trees())
def test_a_level_is_decided_before_the_levels_below(nodes: list[ShareNode]) -> None:
    """Invariant (Fair Tree): for siblings A, B with LF_A > LF_B, every leaf under A has a
    strictly higher factor than every leaf under B."""
    result = fair_tree(nodes, "r")
    lf = level_fairshares(nodes, "r")
    kids = children_of(nodes)
    for siblings in kids.values():
        for a in siblings:
            for b in siblings:
                if lf[a] > lf[b]:
                    lowest_a = min(result[leaf].factor for leaf in leaves_under(kids, a))
                    highest_b = max(result[leaf].factor for leaf in leaves_under(kids, b))
                    assert lowest_a > highest_b, (a, b)


@settings(max_examples=300, deadline=None)
@given(trees())
def test_factors_and_ranks_are_consistent(nodes: list[ShareNode]) -> None:
    """Invariant: every leaf has a factor in (0, 1], the best is exactly 1.0, factor = rank/N,
    and a leaf's rank is N minus the number of leaves ranked strictly above it (a tie group
    of k uses up k ranks); level_fs is the path's LF from the root's child down."""
    result = fair_tree(nodes, "r")
    lf = level_fairshares(nodes, "r")
    kids = children_of(nodes)
    leaves = leaves_under(kids, "r")
    big_n = len(leaves)
    assert sorted(result) == sorted(leaves)
    assert max(fs.factor for fs in result.values()) == 1.0
    parent = {node.id: node.parent for node in nodes}
    for leaf, fs in result.items():
        assert 0.0 < fs.factor <= 1.0
        assert fs.factor == fs.rank / big_n
        assert fs.rank == big_n - sum(1 for other in result.values() if other.rank > fs.rank)
        path = [leaf]
        while parent[path[-1]] != "r":
            path.append(parent[path[-1]])
        assert fs.level_fs == tuple((node, lf[node]) for node in reversed(path))


@settings(max_examples=200, deadline=None)
@given(trees(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(nodes: list[ShareNode], rnd: random.Random) -> None:
    """Invariant: the result depends on the set of nodes only (equal inputs, equal outputs)."""
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert fair_tree(shuffled, "r") == fair_tree(nodes, "r")
    assert level_fairshares(shuffled, "r") == level_fairshares(nodes, "r")


def slurm_reference(nodes: list[ShareNode], root: str) -> dict[str, int]:
    """Slurm's fair_tree.c, transcribed literally and recursively: _calc_assoc_fs for LF and
    _calc_tree_fs (with account merging and `account_tied`) for ranks."""
    kids = {p: sorted(c) for p, c in children_of(nodes).items()}
    by_id = {node.id: node for node in nodes}

    def raw_usage(a: str) -> float:
        return math.fsum(raw_usage(k) for k in kids[a]) if a in kids else by_id[a].usage

    lf: dict[str, float] = {}
    for p, siblings in kids.items():
        shares_sum = math.fsum(by_id[k].shares for k in siblings)
        usage_sum = raw_usage(p)
        for a in siblings:
            s = by_id[a].shares / shares_sum if shares_sum else 0.0
            u = raw_usage(a) / usage_sum if usage_sum else 0.0
            lf[a] = 0.0 if not s else math.inf if not u else s / u

    def cmp_level_fs(x: str, y: str) -> int:
        if lf[x] != lf[y]:
            return -1 if lf[x] > lf[y] else 1
        if (x in kids) != (y in kids):  # users before accounts
            return 1 if x in kids else -1
        return (x > y) - (x < y)

    leaves = leaves_under(kids, root)
    state = {"rank": len(leaves), "rnt": len(leaves)}
    ranks: dict[str, int] = {}

    def calc_tree_fs(siblings: list[str], account_tied: bool) -> None:
        siblings = sorted(siblings, key=functools.cmp_to_key(cmp_level_fs))
        prev_level_fs: float | None = None
        i = 0
        while i < len(siblings):
            a = siblings[i]
            tied = True if (i == 0 and account_tied) else prev_level_fs == lf[a]
            if a not in kids:
                if not tied:
                    state["rank"] = state["rnt"]
                ranks[a] = state["rank"]
                state["rnt"] -= 1
                merge_count = 0
            else:
                merge_count = 0
                while (
                    i + merge_count + 1 < len(siblings)
                    and siblings[i + merge_count + 1] in kids
                    and lf[siblings[i + merge_count + 1]] == lf[a]
                ):
                    merge_count += 1
                merged = [k for acct in siblings[i : i + merge_count + 1] for k in kids[acct]]
                calc_tree_fs(merged, tied)
            prev_level_fs = lf[a]
            i += merge_count + 1

    calc_tree_fs(kids[root], False)
    return ranks


@settings(max_examples=300, deadline=None)
@given(trees())
def test_matches_slurms_recursive_algorithm(nodes: list[ShareNode]) -> None:
    """Invariant: the iterative implementation ranks exactly as Slurm's recursive one."""
    assert {leaf: fs.rank for leaf, fs in fair_tree(nodes, "r").items()} == slurm_reference(nodes, "r")


# --- Classic cases ----------------------------------------------------------------------------


def center() -> list[ShareNode]:
    """center -> pools uni, ent -> orgs -> projects (depth 3)."""
    return [
        n("c", None),
        n("uni", "c", 3), n("ent", "c", 1),
        n("city-u", "uni", 1), n("tech-u", "uni", 1),
        n("acme", "ent", 1),
        n("city-u/nlp", "city-u", 1, 100), n("city-u/vision", "city-u", 1, 900),
        n("tech-u/bio", "tech-u", 2, 50),
        n("acme/llm", "acme", 1, 400), n("acme/ops", "acme", 1, 0),
    ]  # fmt: skip


def test_no_usage_anywhere_all_tie_at_one() -> None:
    """Invariant: with no usage every LF is inf, so every leaf ties at rank N, factor 1.0."""
    nodes = [ShareNode(x.id, x.parent, x.shares, 0.0) for x in center()]
    result = fair_tree(nodes, "c")
    assert {fs.factor for fs in result.values()} == {1.0}
    assert {fs.rank for fs in result.values()} == {5}


def test_heavier_user_ranks_lower() -> None:
    """Invariant: of two leaves with equal shares, the one that used less ranks higher."""
    result = fair_tree([n("c", None), n("light", "c", 1, 100), n("heavy", "c", 1, 200)], "c")
    assert result["light"].factor == 1.0 and result["heavy"].factor == 0.5
    assert result["light"].level_fs == (("light", 1.5),) and result["heavy"].level_fs == (("heavy", 0.75),)


def test_zero_shares_rank_below_everyone() -> None:
    """Invariant: a zero-share leaf has LF 0 and ranks below every sibling with shares, even
    heavy users, and even when it has no usage itself (S == 0 is tested before U == 0)."""
    nodes = [n("c", None), n("a", "c", 1, 0), n("b", "c", 1, 10), n("hog", "c", 1, 1e9), n("z", "c", 0, 0)]
    result = fair_tree(nodes, "c")
    assert result["z"].rank == 1 and result["z"].level_fs == (("z", 0.0),)
    assert all(result[x].rank > 1 for x in "ab") and result["hog"].rank > 1


def test_scaling_siblings_shares_changes_nothing() -> None:
    """Invariant: only share ratios among siblings matter (x10 on one level, x7 on another)."""
    base = center()
    scaled = [
        ShareNode(x.id, x.parent, x.shares * (10 if x.parent == "c" else 7 if x.parent == "uni" else 1), x.usage)
        for x in base
    ]
    assert fair_tree(scaled, "c") == fair_tree(base, "c")


def test_light_org_beats_heavy_org_whatever_its_projects() -> None:
    """Invariant: all projects of the org with the higher LF outrank all of its sibling's,
    even a project that alone used more than the other org's projects together."""
    result = fair_tree(center(), "c")
    lf = level_fairshares(center(), "c")
    assert lf["uni"] > lf["ent"]  # uni: 3/4 of shares, 1050/1450 of usage; ent: 1/4, 400/1450
    assert min(result[p].factor for p in ("city-u/nlp", "city-u/vision", "tech-u/bio")) > max(
        result[p].factor for p in ("acme/llm", "acme/ops")
    )
    # tech-u used far less than city-u with the same shares: its project comes first.
    assert result["tech-u/bio"].rank == 5
    assert result["city-u/nlp"].level_fs[:2] == (("uni", lf["uni"]), ("city-u", lf["city-u"]))
    assert [result[p].rank for p in ("tech-u/bio", "city-u/nlp", "city-u/vision", "acme/ops", "acme/llm")] == [
        5, 4, 3, 2, 1
    ]  # fmt: skip


def test_tied_inner_siblings_are_merged() -> None:
    """Invariant: sibling inner nodes with equal LF pool their children, which are then
    ordered together by their own LF (here a1 > b1 > a2, interleaving the two orgs)."""
    nodes = [
        n("c", None), n("A", "c", 1), n("B", "c", 1),
        n("a1", "A", 1, 1), n("a2", "A", 1, 9),  # LF 0.5/0.1 = 5 and 0.5/0.9 = 0.56
        n("b1", "B", 1, 10),  # LF 1
    ]  # fmt: skip
    result = fair_tree(nodes, "c")
    assert level_fairshares(nodes, "c")["A"] == level_fairshares(nodes, "c")["B"] == 1.0
    assert [result[x].rank for x in ("a1", "b1", "a2")] == [3, 2, 1]


def test_inner_node_tied_with_leaf_passes_the_tie_down() -> None:
    """Invariant (Slurm's account_tied): an inner node whose LF equals a preceding sibling
    leaf's enters tied, so its first leaf shares that leaf's rank; later leaves do not."""
    nodes = [
        n("c", None), n("u", "c", 1, 5), n("X", "c", 1),
        n("x-idle", "X", 1, 0), n("x-busy", "X", 1, 5),
    ]  # fmt: skip
    result = fair_tree(nodes, "c")
    assert result["u"].level_fs[0][1] == result["x-idle"].level_fs[0][1] == 1.0
    assert (result["u"].rank, result["x-idle"].rank, result["x-busy"].rank) == (3, 3, 1)


def test_inner_usage_is_ignored_and_deep_or_empty_trees_work() -> None:
    """Invariant: an inner node's usage is its leaves' sum (a given value is ignored); depth
    is not limited by recursion; a root without children has no leaves."""
    a = fair_tree([n("c", None), n("o1", "c", 1, 999), n("o2", "c"), n("p1", "o1", 1, 1), n("p2", "o2", 1, 2)], "c")
    assert a["p1"].rank == 2 and a["p2"].rank == 1
    chain = [n("c", None)] + [n(f"d{i}", "c" if i == 0 else f"d{i - 1}") for i in range(5000)]
    assert fair_tree(chain, "c") == {"d4999": FairShare(1.0, 1, tuple((f"d{i}", math.inf) for i in range(5000)))}
    assert fair_tree([n("c", None)], "c") == {}


def test_large_tree() -> None:
    """Invariant: a 20,000-project center (10 pools x 50 orgs x 40 projects) gets one
    factor per project, the Fair Tree order between pools holds, and top factor is 1.0."""
    rng = random.Random(7)
    nodes = [n("c", None)]
    for p in range(10):
        nodes.append(n(f"p{p}", "c", rng.randint(1, 10)))
        for o in range(50):
            nodes.append(n(f"p{p}/o{o}", f"p{p}", rng.randint(1, 10)))
            nodes += [n(f"p{p}/o{o}/{j}", f"p{p}/o{o}", rng.randint(0, 10), rng.random() * 1e6) for j in range(40)]
    result = fair_tree(nodes, "c")
    assert len(result) == 20_000 and max(fs.factor for fs in result.values()) == 1.0
    lf = level_fairshares(nodes, "c")
    best_pool = max((f"p{p}" for p in range(10)), key=lambda p: lf[p])
    assert all(fs.rank > 20_000 - 2000 for leaf, fs in result.items() if leaf.startswith(best_pool + "/"))


# --- Malformed trees --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([n("c", None), n("d", None), n("a", "c")], "exactly one root"),
        ([n("a", "c")], "exactly one root"),
        ([n("c", None), n("a", "nowhere")], "not in the tree"),
        ([n("c", None), n("a", "c"), n("x", "y"), n("y", "x")], "cycle: x -> y -> x"),
        ([n("c", None), n("a", "c"), n("s", "s")], "cycle: s -> s"),
        ([n("c", None), n("a", "c"), n("x", "y"), n("y", "z"), n("z", "y")], "cycle: y -> z -> y"),
        ([n("c", None), n("a", "c"), n("a", "c")], "duplicate"),
        ([n("root", None), n("a", "root")], "is not the tree's parentless node"),
        ([n("c", None), n("a", "c", -1)], "shares"),
        ([n("c", None), n("a", "c", 1, math.nan)], "usage"),
        ([n("c", None), n("a", "c", math.inf)], "shares"),
    ],
)
def test_malformed_trees_are_refused(nodes: list[ShareNode], message: str) -> None:
    """Invariant: not exactly one root, a missing parent, a cycle, a duplicate id, a wrong
    root argument and negative or non-finite numbers raise ValueError saying which."""
    with pytest.raises(ValueError, match=message):
        fair_tree(nodes, "c")
    with pytest.raises(ValueError, match=message):
        level_fairshares(nodes, "c")
