"""Free capacity during one decision, indexed for fast fragmentation-aware placement.

Per accelerator type, schedulable servers sit in buckets by their number of wholly free
devices (each bucket a name-sorted list), and partly used devices (fractional jobs) in one
list sorted by free share. Placement rules:
- **Best fit**: a job needing d devices on one server goes to the server with the fewest
  free devices that still has d (ties: name), which keeps whole servers free for big jobs.
- **Gangs** (nodes > 1): n distinct servers with d free each, preferring one rack (the rack
  that holds the job with the best fit), else the fewest racks; best fit within.
- **Fractional** (one device, share < 1000 thousandths): the partly used device with the
  smallest free share that still fits; only if none, a wholly free device of the best-fit
  server becomes shared.
- A `veto(node, devices)` callback lets backfill refuse placements that would delay a
  reservation.
Lowest free device indices are taken first. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import bisect
from collections import ChainMap, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from scheduler.types import NodeView, Placement, Resources

Veto = Callable[[str, int], bool]  # (node, whole devices taken) -> refuse?


@dataclass
class NodeCap:
    name: str
    type: str
    rack: str
    device_count: int
    free: list[int]  # wholly free device indices, ascending
    cpus: int
    memory_mb: int
    shared: dict[int, int] = field(default_factory=dict)  # device -> free thousandths

    def fits(self, r: Resources, whole: int) -> bool:
        return len(self.free) >= whole and self.cpus >= r.cpus_per_node and self.memory_mb >= r.memory_mb_per_node


class TypeCapacity:
    """Free capacity of the servers of one accelerator type.

    A producer may keep one up to date itself (the simulator does, with `take` and
    `give_back`) and pass it in the snapshot; `decide` then works on a `fork()`, a
    copy-on-write view that copies only the servers, buckets and shared-device list it
    changes, so a decision costs what it touches, not the size of the cluster."""

    def __init__(self, type_: str, nodes: list[NodeCap]) -> None:
        self.type = type_
        self.nodes: dict[str, NodeCap] | ChainMap[str, NodeCap] = {n.name: n for n in nodes}
        self.max_devices = max((n.device_count for n in nodes), default=0)
        self.buckets: list[list[str]] = [[] for _ in range(self.max_devices + 1)]
        self.shared: list[tuple[int, str, int]] = []  # (free milli, node, device), sorted
        self.total_free = 0
        for n in sorted(nodes, key=lambda n: n.name):
            self.buckets[len(n.free)].append(n.name)
            self.total_free += len(n.free)
            for dev, milli in n.shared.items():
                bisect.insort(self.shared, (milli, n.name, dev))
        self.device_counts = sorted((n.device_count for n in nodes), reverse=True)
        self.total_devices = sum(self.device_counts)
        self._cow = False
        self._owned_buckets: set[int] = set()
        self._owned_shared = True

    def fork(self) -> TypeCapacity:
        """A view to decide on: reads fall through to this one, writes stay in the view."""
        c = TypeCapacity.__new__(TypeCapacity)
        c.type, c.max_devices, c.device_counts, c.total_devices = self.type, self.max_devices, self.device_counts, self.total_devices
        c.nodes = ChainMap({}, self.nodes)
        c.buckets = list(self.buckets)
        c.shared = self.shared
        c.total_free = self.total_free
        c._cow, c._owned_buckets, c._owned_shared = True, set(), False
        return c

    def _node(self, name: str) -> NodeCap:
        """The server, copied into the view first if it is a fork."""
        if not self._cow:
            return self.nodes[name]
        own = self.nodes.maps[0]  # type: ignore[union-attr]
        node = own.get(name)
        if node is None:
            base = self.nodes[name]
            node = own[name] = NodeCap(base.name, base.type, base.rack, base.device_count, list(base.free), base.cpus,
                                       base.memory_mb, dict(base.shared))
        return node

    def _bucket(self, k: int) -> list[str]:
        if self._cow and k not in self._owned_buckets:
            self.buckets[k] = list(self.buckets[k])
            self._owned_buckets.add(k)
        return self.buckets[k]

    def _shared_list(self) -> list[tuple[int, str, int]]:
        if not self._owned_shared:
            self.shared = list(self.shared)
            self._owned_shared = True
        return self.shared

    def views(self) -> list[NodeView]:
        """The servers as NodeViews (for policies that want the plain list)."""
        return [NodeView(n.name, n.type, n.device_count, tuple(n.free), n.cpus, n.memory_mb, True, n.rack or None,
                         tuple(sorted((d, m) for d, m in n.shared.items() if m > 0)))
                for n in (self.nodes[name] for name in sorted(self.nodes))]

    # ------------------------------------------------------------------ queries
    def could_ever_fit(self, r: Resources) -> bool:
        """Whether enough servers of this type exist at all (ignoring what is in use)."""
        need = r.devices_per_node if not r.fractional else 1
        return len(self.device_counts) >= r.nodes and self.device_counts[r.nodes - 1] >= need

    def may_fit(self, r: Resources) -> bool:
        """Whether some server has the devices one server's share of `r` needs now (CPU and
        memory not checked): the cheap test before scoring every server."""
        if r.devices_per_node == 0:
            return bool(self.nodes)
        if r.fractional and self.shared and self.shared[-1][0] >= r.device_milli:
            return True
        need = 1 if r.fractional else r.devices_per_node
        return any(self.buckets[k] for k in range(need, self.max_devices + 1))

    def candidates(self, whole: int) -> Iterator[NodeCap]:
        """Servers with at least `whole` free devices, best fit first."""
        for k in range(max(whole, 0), self.max_devices + 1):
            for name in self.buckets[k]:
                yield self.nodes[name]

    def servers_for(self, r: Resources) -> list[NodeCap]:
        """The servers that could hold one server's share of `r` by their devices (CPU and
        memory not checked): enough wholly free devices, or for a fraction also those with
        a partly used device; all of them for a CPU-only request."""
        if r.devices_per_node == 0:
            return self._all()
        if r.fractional:
            shared = {name for milli, name, _ in self.shared if milli >= r.device_milli}
            return list(self.candidates(1)) + [self.nodes[n] for n in sorted(shared) if len(self.nodes[n].free) < 1]
        return list(self.candidates(r.devices_per_node))

    def _all(self) -> list[NodeCap]:
        if isinstance(self.nodes, ChainMap):
            over, base = self.nodes.maps
            if over:
                merged = dict(base)
                merged.update(over)
                return list(merged.values())
            return list(base.values())
        return list(self.nodes.values())

    # ------------------------------------------------------------------ placement
    def place(self, r: Resources, veto: Veto | None = None) -> tuple[Placement, ...] | None:
        """Find a placement for `r` without taking it (see `take`)."""
        if r.fractional:
            return self._place_fraction(r, veto)
        if r.total_devices > self.total_free:
            return None
        if r.nodes == 1:
            for node in self.candidates(r.devices_per_node):
                if node.fits(r, r.devices_per_node) and not (veto and veto(node.name, r.devices_per_node)):
                    return (Placement(node.name, tuple(node.free[: r.devices_per_node])),)
            return None
        return self._place_gang(r, veto)

    def _place_gang(self, r: Resources, veto: Veto | None) -> tuple[Placement, ...] | None:
        d = r.devices_per_node
        by_rack: dict[str, list[NodeCap]] = defaultdict(list)
        count = 0
        cpus, mem, nodes = r.cpus_per_node, r.memory_mb_per_node, self.nodes
        for k in range(d, self.max_devices + 1):  # = candidates(d), with `fits` inlined (the hot loop)
            for name in self.buckets[k]:
                node = nodes[name]
                if node.cpus >= cpus and node.memory_mb >= mem and not (veto and veto(name, d)):
                    by_rack[node.rack].append(node)
                    count += 1
        if count < r.nodes:
            return None
        # One rack if any can hold the whole job: the one whose chosen servers fit best.
        whole_racks = [(sum(len(n.free) for n in ns[: r.nodes]), rack) for rack, ns in by_rack.items() if len(ns) >= r.nodes]
        if whole_racks:
            _, rack = min(whole_racks)
            chosen = by_rack[rack][: r.nodes]
        else:  # fewest racks: the racks with the most candidates first
            chosen = []
            for _, ns in sorted(by_rack.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                chosen.extend(ns[: r.nodes - len(chosen)])
                if len(chosen) == r.nodes:
                    break
        return tuple(Placement(n.name, tuple(n.free[:d])) for n in sorted(chosen, key=lambda n: n.name))

    def _place_fraction(self, r: Resources, veto: Veto | None) -> tuple[Placement, ...] | None:
        i = bisect.bisect_left(self.shared, (r.device_milli, "", -1))
        for _milli, name, dev in self.shared[i:]:
            node = self.nodes[name]
            if node.cpus >= r.cpus_per_node and node.memory_mb >= r.memory_mb_per_node:
                return (Placement(name, (dev,)),)
        for node in self.candidates(1):
            if node.fits(r, 1) and not (veto and veto(node.name, 1)):
                return (Placement(node.name, (node.free[0],)),)
        return None

    def take(self, placements: tuple[Placement, ...], r: Resources) -> None:
        """Mark the placement's devices, CPUs and memory as used."""
        for p in placements:
            node = self._node(p.node)
            before = len(node.free)
            if r.fractional:
                (dev,) = p.devices
                if dev in node.shared:
                    self._unshare(node, dev)
                    left = node.shared.pop(dev) - r.device_milli
                else:
                    node.free.remove(dev)
                    left = 1000 - r.device_milli
                if left > 0:
                    node.shared[dev] = left
                    bisect.insort(self._shared_list(), (left, node.name, dev))
            else:
                taken = set(p.devices)
                node.free = [d for d in node.free if d not in taken]
            node.cpus -= r.cpus_per_node
            node.memory_mb -= r.memory_mb_per_node
            self._move(node, before)

    def give_back(self, node_name: str, devices: tuple[int, ...], milli: int, cpus: int, memory_mb: int) -> None:
        """Return devices to the free pool (a hypothetical release, e.g. for reclaim)."""
        node = self._node(node_name)
        before = len(node.free)
        for dev in devices:
            if milli >= 1000:
                bisect.insort(node.free, dev)
            else:
                if dev in node.shared:
                    self._unshare(node, dev)
                got = node.shared.pop(dev, 0) + milli
                if got >= 1000:
                    bisect.insort(node.free, dev)
                else:
                    node.shared[dev] = got
                    bisect.insort(self._shared_list(), (got, node.name, dev))
        node.cpus += cpus
        node.memory_mb += memory_mb
        self._move(node, before)

    def _unshare(self, node: NodeCap, dev: int) -> None:
        entry = (node.shared[dev], node.name, dev)
        shared = self._shared_list()
        i = bisect.bisect_left(shared, entry)
        if i < len(shared) and shared[i] == entry:
            del shared[i]

    def _move(self, node: NodeCap, before: int) -> None:
        after = len(node.free)
        if after == before:
            return
        old = self._bucket(before)
        del old[bisect.bisect_left(old, node.name)]
        bisect.insort(self._bucket(after), node.name)
        self.total_free += after - before


def build(nodes: tuple[NodeView, ...]) -> dict[str, TypeCapacity]:
    by_type: dict[str, list[NodeCap]] = defaultdict(list)
    for n in nodes:
        if n.schedulable:
            by_type[n.accelerator_type].append(
                NodeCap(n.name, n.accelerator_type, n.rack or "", n.device_count, sorted(n.free_devices),
                        n.free_cpus, n.free_memory_mb, dict(n.shared))
            )
    return {t: TypeCapacity(t, ns) for t, ns in by_type.items()}
