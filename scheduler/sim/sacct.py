"""Slurm accounting records as a job trace: the output of

    sacct --parsable2 --format=JobID,User,Account,Partition,Submit,Start,End,Timelimit,AllocTRES,State

(`|`-separated, a header line first; `--parsable` output, with a `|` ending every line, is read
too). Those ten columns are required, in any order; other columns are ignored.

Mapping (one `SimJob` per job allocation):
- skipped and counted (`SacctSkips`): job steps (JobID with a ".": 123.batch, 123.extern,
  123.0); jobs that never started (Start "Unknown" or "None": pending, or cancelled while
  pending); unfinished jobs (End "Unknown": RUNNING, SUSPENDED, …); jobs with End == Start.
- id = the record's 1-based data row number (so ids are unique and point back into the file);
  name = JobID (array tasks "123_4" and het-job parts "123+0" are jobs of their own).
- submit_time = seconds since the earliest Submit of the kept jobs (the trace starts at 0).
  Times are Slurm's local ISO times without a zone (`2024-03-01T10:00:00`); differences are
  taken as written (off by the shift across a daylight-saving change; none in China).
- duration_s = End − Start (End before Start is an error).
- time_limit_s from Timelimit: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`;
  `UNLIMITED`, `Partition_Limit`, empty and 0 (Slurm's "no limit") → None.
- AllocTRES (`billing=8,cpu=8,gres/gpu=2,mem=64G,node=1`, or `gres/gpu:a100=4`; `gres/npu`
  the same): nodes = `node` (1 if absent); devices per node = devices / nodes (must divide);
  devices = `gres/gpu` if given, else the sum of the typed `gres/gpu:TYPE` counts; the types
  named become `accelerators` (one type at most per job); cpu_milli = ⌈cpu × 1000 / nodes⌉;
  memory_mib = ⌈mem / nodes⌉ in MiB (suffixes K, M, G, T, P; none = M); other TRES are ignored.
  Missing cpu or mem keep `SimJob`'s defaults.
- tenant = Account (User when Account is empty); pool = Partition (None when empty).

Invariants: returns lists, reads nothing lazily; any malformed record raises `TraceError`
naming file, line and column; pure parsing (the only I/O is reading the given file).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from scheduler.sim.model import SimJob
from scheduler.sim.traces import TraceError

COLUMNS = ("JobID", "User", "Account", "Partition", "Submit", "Start", "End", "Timelimit", "AllocTRES", "State")
NO_LIMIT = frozenset({"UNLIMITED", "Partition_Limit", "NONE", ""})
NOT_STARTED = frozenset({"Unknown", "None", ""})
_MEM_MIB = {"K": Decimal(1) / 1024, "M": Decimal(1), "G": Decimal(1024), "T": Decimal(1024**2), "P": Decimal(1024**3)}
_DEVICE_TRES = re.compile(r"^gres/(gpu|npu)(?::([^:=]+))?$")
_TIMELIMIT = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class SacctSkips:
    """Records not turned into jobs, by reason."""

    steps: int = 0
    never_started: int = 0
    unfinished: int = 0
    zero_duration: int = 0

    @property
    def total(self) -> int:
        return self.steps + self.never_started + self.unfinished + self.zero_duration


def parse_timelimit(text: str) -> float | None:
    """Seconds of a Slurm time limit; None for no limit. Raises ValueError if malformed.

    Slurm's forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (days given: the first
    number after the dash is hours)."""
    text = text.strip()
    if text in NO_LIMIT:
        return None
    m = _TIMELIMIT.match(text)
    if not m:
        raise ValueError(f"not a Slurm time limit: {text!r}")
    days, a, b, c = m.groups()
    if days is not None:
        h, mi, s = int(a), int(b or 0), int(c or 0)
        seconds = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif c is not None:
        seconds = int(a) * 3600 + int(b) * 60 + int(c)  # HH:MM:SS
    elif b is not None:
        seconds = int(a) * 60 + int(b)  # MM:SS
    else:
        seconds = int(a) * 60  # MM
    return float(seconds) if seconds > 0 else None


def parse_memory_mib(text: str) -> Decimal:
    """MiB in a TRES memory amount such as `64G`, `1.50T`, `4000M`, `512` (M)."""
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGTP]?)$", text.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a memory amount: {text!r}")
    return Decimal(m.group(1)) * _MEM_MIB[(m.group(2) or "M").upper()]


@dataclass(frozen=True)
class Tres:
    nodes: int = 1
    devices: int = 0  # in all, over the nodes
    types: tuple[str, ...] = ()
    cpus: int | None = None
    memory_mib: Decimal | None = None


def parse_tres(text: str) -> Tres:
    """The parts of an AllocTRES string that a job needs. Raises ValueError if malformed."""
    tres = Tres()
    untyped: int | None = None
    typed: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        if key == "node":
            tres = replace(tres, nodes=_count(key, value, low=1))
        elif key == "cpu":
            tres = replace(tres, cpus=_count(key, value))
        elif key == "mem":
            tres = replace(tres, memory_mib=parse_memory_mib(value))
        elif m := _DEVICE_TRES.match(key):
            if m.group(2) is None:
                untyped = (untyped or 0) + _count(key, value)
            else:
                typed[m.group(2)] = typed.get(m.group(2), 0) + _count(key, value)
    if len(typed) > 1:
        raise ValueError(f"devices of several types ({', '.join(typed)}); a simulated job runs on one type")
    devices = untyped if untyped is not None else sum(typed.values())
    return replace(tres, devices=devices, types=tuple(typed))


def _count(key: str, value: str, low: int = 0) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a whole number") from None
    if n < low:
        raise ValueError(f"{key}={n} must be ≥ {low}")
    return n


def _time(path: str | Path, line: int, field: str, text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise TraceError(path, line, field, f"not a time like 2024-03-01T10:00:00: {text!r}") from None
    if when.tzinfo is not None:
        raise TraceError(path, line, field, f"sacct prints local times without a zone: {text!r}")
    return when


def read_sacct_counted(path: str | Path) -> tuple[list[SimJob], SacctSkips]:
    """The jobs of a sacct file (see the module docstring) and the records skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceError(path, 0, "file", f"not UTF-8 text ({exc.reason})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise TraceError(path, 1, "header", "a header line (JobID|User|…) is required first")
    trailing = lines[0].endswith("|")  # `--parsable`: every line ends with "|"
    header = [h.strip() for h in (lines[0][:-1] if trailing else lines[0]).split("|")]
    for col in COLUMNS:
        if col not in header:
            raise TraceError(path, 1, col, f"missing column (the format needs {','.join(COLUMNS)})")
    if len(set(header)) != len(header):
        raise TraceError(path, 1, "header", "a column is repeated")
    at = {c: header.index(c) for c in COLUMNS}
    skips = {"steps": 0, "never_started": 0, "unfinished": 0, "zero_duration": 0}
    kept: list[tuple[int, datetime, SimJob]] = []
    for lineno, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cells = (raw[:-1] if trailing and raw.endswith("|") else raw).split("|")
        if len(cells) != len(header):
            raise TraceError(path, lineno, "row", f"{len(cells)} fields, the header has {len(header)}")
        row = {c: cells[i].strip() for c, i in at.items()}
        job_id = row["JobID"]
        if not job_id:
            raise TraceError(path, lineno, "JobID", "empty")
        if "." in job_id:
            skips["steps"] += 1
            continue
        if row["Start"] in NOT_STARTED:
            skips["never_started"] += 1
            continue
        if row["End"] in NOT_STARTED:
            skips["unfinished"] += 1
            continue
        submit = _time(path, lineno, "Submit", row["Submit"])
        start = _time(path, lineno, "Start", row["Start"])
        end = _time(path, lineno, "End", row["End"])
        duration = (end - start).total_seconds()
        if duration < 0:
            raise TraceError(path, lineno, "End", f"ends before it starts ({row['End']} < {row['Start']})")
        if duration == 0:
            skips["zero_duration"] += 1
            continue
        try:
            limit = parse_timelimit(row["Timelimit"])
        except ValueError as exc:
            raise TraceError(path, lineno, "Timelimit", str(exc)) from None
        try:
            tres = parse_tres(row["AllocTRES"])
        except ValueError as exc:
            raise TraceError(path, lineno, "AllocTRES", str(exc)) from None
        if tres.devices % tres.nodes:
            raise TraceError(path, lineno, "AllocTRES",
                             f"{tres.devices} devices do not divide evenly over {tres.nodes} nodes")
        tenant = row["Account"] or row["User"]
        if not tenant:
            raise TraceError(path, lineno, "Account", "no Account and no User: the job has no tenant")
        extra: dict[str, int] = {}
        if tres.cpus is not None:
            extra["cpu_milli"] = math.ceil(tres.cpus * 1000 / tres.nodes)
        if tres.memory_mib is not None:
            extra["memory_mib"] = math.ceil(tres.memory_mib / tres.nodes)
        job = SimJob(
            id=lineno - 1,
            submit_time=0.0,  # set below, once the earliest submit is known
            duration_s=duration,
            devices=tres.devices // tres.nodes,
            nodes=tres.nodes,
            accelerators=tres.types,
            tenant=tenant,
            pool=row["Partition"] or None,
            time_limit_s=limit,
            name=job_id,
            **extra,
        )
        kept.append((lineno, submit, job))
    if not kept:
        return [], SacctSkips(**skips)
    base = min(s for _, s, _ in kept)
    jobs = [replace(job, submit_time=(s - base).total_seconds()) for _, s, job in kept]
    return jobs, SacctSkips(**skips)


def read_sacct(path: str | Path) -> list[SimJob]:
    """The jobs of a sacct file (see the module docstring); `read_sacct_counted` also says
    how many records were skipped and why."""
    return read_sacct_counted(path)[0]
