"""Borrowing and reclaim.

Definitions (per accelerator type, in thousandths of a device):
- An org's running jobs on a type, taken in start order (ties by id), fill its guarantee
  first; likewise a pool's jobs (all its orgs together) fill the pool's guarantee. A job is
  **protected** if, counting it, the jobs started up to it stay within its org's guarantee
  (`before + job <= guaranteed`) or within its pool's guarantee. Every other running job
  is **borrowing**; an org in a pool without guarantees borrows everything it runs.
- A pending job **may reclaim** on a type if its org's usage there plus the job stays within
  the org's guarantee, or its pool's usage plus the job stays within the pool's guarantee.

Reclaim: when such a job cannot start, victims are chosen among borrowing jobs of *other*
orgs on that type that are not already being stopped — lowest priority first, then the
most recently started — adding one at a time until the job would fit (devices of jobs
already being stopped count as free), then dropping every victim that turns out not to be
needed (latest added first). A protected job is never a victim.

No preemption loops: a job that reclaims starts within its org's or its pool's guarantee
and is the latest started there, so it is protected, so nobody can take those devices back
by reclaim. Admins keep guarantees keepable (`suanli/admin.py`: per pool the larger of its
guarantee and its orgs' guarantees summed, over all pools, fits the capacity). CPUs and
memory are not considered here (devices are the scarce resource); the job starts in a later
cycle through normal placement once the victims are gone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from scheduler.policy.capacity import TypeCapacity
from scheduler.types import Quota, Resources, RunningJob


def borrowing(running: Iterable[RunningJob], quotas: dict[tuple[str, str], Quota],
              pool_quotas: dict[tuple[str, str], Quota] | None = None) -> set[int]:
    """Ids of running jobs that are borrowing (see module docstring)."""
    def within(groups: dict[tuple[str, str], list[RunningJob]], q: dict[tuple[str, str], Quota]) -> set[int]:
        inside: set[int] = set()
        for key, jobs in groups.items():
            g = q.get(key, Quota()).guaranteed * 1000
            used = 0
            for j in sorted(jobs, key=lambda j: (j.started_at, j.id)):
                used += j.milli
                if used <= g:
                    inside.add(j.id)
        return inside

    by_org: dict[tuple[str, str], list[RunningJob]] = defaultdict(list)
    by_pool: dict[tuple[str, str], list[RunningJob]] = defaultdict(list)
    jobs = list(running)
    for j in jobs:
        by_org[(j.org, j.accelerator_type)].append(j)
        by_pool[(j.pool, j.accelerator_type)].append(j)
    protected = within(by_org, quotas) | within(by_pool, pool_quotas or {})
    return {j.id for j in jobs} - protected


def _feasible(free: dict[str, int], need: int, nodes: int) -> dict[str, int] | None:
    """The best-fit servers (and their free devices) if `nodes` of them have `need` free."""
    ok = sorted((k, n) for n, k in free.items() if k >= need)
    return {n: k for k, n in ok[:nodes]} if len(ok) >= nodes else None


def find_victims(
    org: str,
    r: Resources,
    cap: TypeCapacity,
    running: Iterable[RunningJob],
    borrowers: set[int],
    stopping: set[int],
    rank: dict[int, float],
) -> tuple[list[RunningJob], dict[str, int]] | None:
    """Victims (possibly none, when jobs being stopped already make room) and the servers the
    job will use with their free devices once the victims are gone; None if even preempting
    every candidate would not make it fit."""
    need = 1 if r.fractional else r.devices_per_node
    free = {name: len(n.free) for name, n in cap.nodes.items()}
    candidates: list[RunningJob] = []
    for j in running:
        if j.accelerator_type != cap.type:
            continue
        whole = j.device_milli >= 1000
        if j.id in stopping:
            for p in j.placements:
                if p.node in free and whole:
                    free[p.node] += len(p.devices)
        elif j.id in borrowers and j.org != org and whole:
            candidates.append(j)
    chosen_nodes = _feasible(free, need, r.nodes)
    if chosen_nodes is not None:
        return [], chosen_nodes
    candidates.sort(key=lambda j: (rank.get(j.id, 0.0), -j.started_at, -j.id))
    victims: list[RunningJob] = []
    for v in candidates:
        _release(free, v, +1)
        victims.append(v)
        if _feasible(free, need, r.nodes) is not None:
            break
    else:
        return None
    for v in reversed(victims[:-1]):  # minimal: drop victims that are not needed
        _release(free, v, -1)
        if _feasible(free, need, r.nodes) is None:
            _release(free, v, +1)
        else:
            victims.remove(v)
    nodes = _feasible(free, need, r.nodes)
    assert nodes is not None
    return victims, nodes


def _release(free: dict[str, int], j: RunningJob, sign: int) -> None:
    for p in j.placements:
        if p.node in free:
            free[p.node] += sign * len(p.devices)
