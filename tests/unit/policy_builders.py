"""Builders for policy tests: make_node(), make_job(), make_running(), make_snapshot()."""

from __future__ import annotations

from typing import Any

from scheduler.types import (
    JobRequest,
    NodeView,
    Placement,
    PolicyConfig,
    Quota,
    Resources,
    RunningJob,
    ShareNode,
    Snapshot,
)

A100, B910 = "nvidia-a100-80g", "ascend-910b"
NOW = 1_000_000.0


def make_node(name: str, type_: str = A100, count: int = 8, used: tuple[int, ...] = (), rack: str | None = None,
              cpus: int = 128, mem: int = 1 << 20, schedulable: bool = True,
              shared: tuple[tuple[int, int], ...] = ()) -> NodeView:
    busy = set(used) | {d for d, _ in shared}
    return NodeView(name, type_, count, tuple(i for i in range(count) if i not in busy), cpus, mem, schedulable, rack, shared)


def make_job(id: int, devices: int = 1, nodes: int = 1, types: tuple[str, ...] = (A100,), org: str = "o1",
             project: str = "p", pool: str = "pool", t: float | None = None, limit: int = 3600,
             cls: str = "normal", milli: int = 1000, cpus: int = 1, mem: int = 1024) -> JobRequest:
    return JobRequest(id, org, Resources(types, devices, nodes, cpus, mem, milli),
                      NOW - 100 + (id if t is None else t), limit, project, pool, cls)


def make_running(id: int, node: str, devices: tuple[int, ...], type_: str = A100, org: str = "o2", started: float = NOW - 50,
                 limit: int = 3600, cls: str = "normal", pool: str = "pool", stop_by: float | None = None,
                 grace: float = 10.0, extra: tuple[Placement, ...] = ()) -> RunningJob:
    return RunningJob(id, org, type_, (Placement(node, devices), *extra), started, limit, started - 10, "p", pool, cls,
                      1000, grace, stop_by)


def tree(orgs: dict[str, tuple[str, float, float]]) -> tuple[ShareNode, ...]:
    """{org: (pool, shares, usage of its project 'p')} -> a share tree."""
    nodes = [ShareNode("center", None, 1)]
    for pool in sorted({p for p, _, _ in orgs.values()}):
        nodes.append(ShareNode(f"pool:{pool}", "center", 1))
    for org, (pool, shares, usage) in sorted(orgs.items()):
        nodes.append(ShareNode(f"org:{org}", f"pool:{pool}", shares))
        nodes.append(ShareNode(f"project:{org}/p", f"org:{org}", 1, usage))
    return tuple(nodes)


def make_snapshot(nodes: list[NodeView], pending: list[JobRequest], running: list[RunningJob] = (),  # type: ignore[assignment]
                  **kw: Any) -> Snapshot:
    kw.setdefault("config", PolicyConfig())
    return Snapshot(tuple(nodes), tuple(pending), tuple(running), **kw)


def quota(g: int = 0, limit: int | None = None) -> Quota:
    return Quota(g, limit)
