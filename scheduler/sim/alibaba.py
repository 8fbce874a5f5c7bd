"""Readers for the Alibaba cluster-trace-gpu-v2023 ("openb", the FGD / ATC'23 trace).

Files (see /work/shared/traces/alibaba-gpu-v2023/README.md):
- node lists `sn,cpu_milli,memory_mib,gpu,model` → `read_nodes` → `SimServer`s: name = `sn`,
  accelerator type = the `model` string as written ("G2", "T4", "V100M16", …), devices = `gpu`.
  CPU-only nodes (gpu 0, empty model) are skipped when `gpu_only` (the default, the FGD cluster);
  otherwise they are kept with `devices == 0` and type `CPU_ONLY_TYPE` ("cpu").
- pod lists `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,
  deletion_time,scheduled_time` → `read_pods` → `AlibabaPod`s. The multigpu lists have only the
  first 5 columns; their pods have `gpu_spec == ()` and None for qos, phase and the times.

Two replay modes:
- time mode, `pods_to_jobs`: submit = creation_time, duration = deletion_time − creation_time;
  pods without a positive duration are skipped and counted; devices = num_gpu on one node,
  device_milli = gpu_milli when num_gpu == 1 (else 1000), accelerators = gpu_spec (repeats
  dropped, order kept), cpu_milli and memory_mib from the pod, no time limit (the simulator's
  rule sets it), priority class "normal" (qos is not mapped). Job id = 1 + the pod's position
  in the given list (so `pods[job.id - 1]` is its pod; ids stay unique when a pod repeats).
- FGD mode, `fgd_arrivals`: the paper's protocol — pods drawn with replacement by
  `random.Random(seed)` until the arrived GPU request reaches `tune × total_gpus`.

Tenants (the trace has none): pod `name` belongs to `tenant-<k>` with
    k = int.from_bytes(sha256(f"{seed}:{name}".encode("utf-8")).digest()[:8], "big") % tenants
(`tenant_of`). It depends only on (seed, name, tenants): the same on every machine and Python
run (no `hash()`), the same for a pod drawn twice, and close to uniform over the k values.

Invariants: readers return lists (nothing lazy) and raise `TraceError` (file, line, column) for
any malformed line; header lines must be exactly one of the layouts above; num_gpu == 0 ⇔
gpu_milli == 0 for pods, 0 < gpu_milli ≤ 1000 with one GPU and == 1000 with several;
gpu == 0 ⇔ empty model for nodes. Pure parsing: the only I/O is reading the given file.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler.sim.model import SimJob, SimServer
from scheduler.sim.traces import TraceError

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
               "creation_time", "deletion_time", "scheduled_time")
POD_COLUMNS_SHORT = POD_COLUMNS[:5]  # the multigpu lists
CPU_ONLY_TYPE = "cpu"
QOS = frozenset({"LS", "BE", "Burstable", "Guaranteed"})
PHASES = frozenset({"Running", "Succeeded", "Failed", "Pending"})


@dataclass(frozen=True)
class AlibabaPod:
    """One pod of a pod list, every column kept (None: the column is absent or empty)."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per-GPU share in milli-GPU; 0 for CPU-only pods
    gpu_spec: tuple[str, ...] = ()  # allowed GPU types; empty = any
    qos: str | None = None
    pod_phase: str | None = None
    creation_time: int | None = None  # seconds from trace start
    deletion_time: int | None = None
    scheduled_time: int | None = None  # None: never scheduled (empty cell)

    @property
    def gpu_request(self) -> float:
        """GPUs requested, as whole-GPU equivalents (num_gpu × gpu_milli / 1000)."""
        return self.num_gpu * self.gpu_milli / 1000

    @property
    def gpu_request_milli(self) -> int:
        return self.num_gpu * self.gpu_milli


def _rows(path: str | Path, layouts: Sequence[tuple[str, ...]]) -> Iterator[tuple[int, tuple[str, ...], list[str]]]:
    """(line, header, cells) of every non-blank data row; checks the header and cell counts."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header: tuple[str, ...] | None = None
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    if header is None:
                        raise TraceError(path, line, "header", "a header line is required first")
                    continue
                if header is None:
                    got = tuple(c.strip() for c in cells)
                    if got not in layouts:
                        raise TraceError(path, line, "header",
                                         f"expected {' or '.join(','.join(h) for h in layouts)}; got {','.join(got)}")
                    header = got
                    continue
                if len(cells) != len(header):
                    raise TraceError(path, line, "row", f"{len(cells)} cells, the header has {len(header)}")
                yield line, header, [c.strip() for c in cells]
    except UnicodeDecodeError as exc:
        raise TraceError(path, 0, "file", f"not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise TraceError(path, 0, "file", f"not a CSV file ({exc})") from None
    if header is None:
        raise TraceError(path, 1, "header", "empty file: a header line is required")


def _int(path: str | Path, line: int, field: str, text: str, *, optional: bool = False, low: int = 0) -> int | None:
    if text == "" and optional:
        return None
    try:
        value = int(text)
    except ValueError:
        raise TraceError(path, line, field, f"not an integer: {text!r}") from None
    if value < low:
        raise TraceError(path, line, field, f"must be ≥ {low}, got {value}")
    return value


def _name(path: str | Path, line: int, field: str, text: str) -> str:
    if not text:
        raise TraceError(path, line, field, "empty")
    return text


def read_nodes(path: str | Path, gpu_only: bool = True) -> list[SimServer]:
    """The servers of a node list, in file order (CPU-only nodes only when not `gpu_only`)."""
    servers: list[SimServer] = []
    seen: dict[str, int] = {}
    for line, _, (sn, cpu, mem, gpu, model) in _rows(path, [NODE_COLUMNS]):
        sn = _name(path, line, "sn", sn)
        if sn in seen:
            raise TraceError(path, line, "sn", f"node {sn!r} already on line {seen[sn]}")
        seen[sn] = line
        cpu_milli = _int(path, line, "cpu_milli", cpu, low=1)
        memory_mib = _int(path, line, "memory_mib", mem, low=1)
        devices = _int(path, line, "gpu", gpu)
        assert cpu_milli is not None and memory_mib is not None and devices is not None
        if (devices == 0) != (model == ""):
            raise TraceError(path, line, "model", f"a node with {devices} GPUs has model {model!r}")
        if devices == 0 and gpu_only:
            continue
        servers.append(SimServer(name=sn, accelerator_type=model or CPU_ONLY_TYPE, devices=devices,
                                 cpu_milli=cpu_milli, memory_mib=memory_mib))
    return servers


def read_pods(path: str | Path) -> list[AlibabaPod]:
    """Every pod of a pod list (11-column or 5-column layout), in file order."""
    pods: list[AlibabaPod] = []
    for line, header, cells in _rows(path, [POD_COLUMNS, POD_COLUMNS_SHORT]):
        row = dict(zip(header, cells))
        name = _name(path, line, "name", row["name"])
        cpu_milli = _int(path, line, "cpu_milli", row["cpu_milli"])
        memory_mib = _int(path, line, "memory_mib", row["memory_mib"])
        num_gpu = _int(path, line, "num_gpu", row["num_gpu"])
        gpu_milli = _int(path, line, "gpu_milli", row["gpu_milli"])
        assert cpu_milli is not None and memory_mib is not None and num_gpu is not None and gpu_milli is not None
        if num_gpu == 0 and gpu_milli != 0:
            raise TraceError(path, line, "gpu_milli", f"a CPU-only pod asks {gpu_milli} milli-GPU")
        if num_gpu == 1 and not 0 < gpu_milli <= 1000:
            raise TraceError(path, line, "gpu_milli", f"must be in 1..1000 for one GPU, got {gpu_milli}")
        if num_gpu > 1 and gpu_milli != 1000:
            raise TraceError(path, line, "gpu_milli", f"must be 1000 with {num_gpu} GPUs, got {gpu_milli}")
        if len(header) == len(POD_COLUMNS_SHORT):
            pods.append(AlibabaPod(name, cpu_milli, memory_mib, num_gpu, gpu_milli))
            continue
        spec = tuple(row["gpu_spec"].split("|")) if row["gpu_spec"] else ()
        if any(not s for s in spec):
            raise TraceError(path, line, "gpu_spec", f"empty type in {row['gpu_spec']!r}")
        qos, phase = row["qos"], row["pod_phase"]
        if qos not in QOS:
            raise TraceError(path, line, "qos", f"{qos!r} is not one of {', '.join(sorted(QOS))}")
        if phase not in PHASES:
            raise TraceError(path, line, "pod_phase", f"{phase!r} is not one of {', '.join(sorted(PHASES))}")
        created = _int(path, line, "creation_time", row["creation_time"])
        deleted = _int(path, line, "deletion_time", row["deletion_time"])
        scheduled = _int(path, line, "scheduled_time", row["scheduled_time"], optional=True)
        pods.append(AlibabaPod(name, cpu_milli, memory_mib, num_gpu, gpu_milli, spec, qos, phase,
                               created, deleted, scheduled))
    return pods


def tenant_of(pod_name: str, tenants: int = 8, seed: int = 0) -> str:
    """The synthetic tenant of a pod: `tenant-<k>`, k = first 8 bytes (big-endian) of
    sha256(f"{seed}:{pod_name}") modulo `tenants`."""
    if tenants < 1:
        raise ValueError(f"tenants must be ≥ 1, got {tenants}")
    digest = hashlib.sha256(f"{seed}:{pod_name}".encode()).digest()
    return f"tenant-{int.from_bytes(digest[:8], 'big') % tenants}"


def pods_to_jobs(pods: Sequence[AlibabaPod], tenants: int = 8, seed: int = 0) -> tuple[list[SimJob], int]:
    """Time-mode jobs of `pods` and how many pods were skipped for a duration ≤ 0 (see the
    module docstring for the mapping). Raises ValueError for pods without times (the
    5-column lists), which only the FGD mode can replay."""
    jobs: list[SimJob] = []
    skipped = 0
    for i, pod in enumerate(pods):
        if pod.creation_time is None or pod.deletion_time is None:
            raise ValueError(f"pod {pod.name} has no creation/deletion time (a 5-column list?): use fgd_arrivals")
        duration = pod.deletion_time - pod.creation_time
        if duration <= 0:
            skipped += 1
            continue
        jobs.append(SimJob(
            id=i + 1,
            submit_time=float(pod.creation_time),
            duration_s=float(duration),
            devices=pod.num_gpu,
            nodes=1,
            device_milli=pod.gpu_milli if pod.num_gpu == 1 else 1000,
            accelerators=tuple(dict.fromkeys(pod.gpu_spec)),
            tenant=tenant_of(pod.name, tenants, seed),
            cpu_milli=pod.cpu_milli,
            memory_mib=pod.memory_mib,
            name=pod.name,
        ))
    return jobs, skipped


def fgd_arrivals(pods: Sequence[AlibabaPod], total_gpus: int, seed: int, tune: float = 1.3) -> list[AlibabaPod]:
    """The FGD paper's arrivals: `random.Random(seed).choice(pods)` repeatedly (with
    replacement; CPU-only pods are drawn and kept too) until the sum of GPU requests
    (num_gpu × gpu_milli / 1000) reaches `tune × total_gpus`; returned in arrival order. The
    sum first reaches the target at the last pod."""
    if total_gpus <= 0 or tune <= 0:
        raise ValueError(f"total_gpus and tune must be > 0, got {total_gpus} and {tune}")
    if not any(p.gpu_request_milli for p in pods):
        raise ValueError("no pod asks for a GPU: the target can never be reached")
    rng = random.Random(seed)
    target_milli = tune * total_gpus * 1000
    arrived: list[AlibabaPod] = []
    total = 0
    while total < target_milli:
        pod = rng.choice(pods)
        arrived.append(pod)
        total += pod.gpu_request_milli
    return arrived
