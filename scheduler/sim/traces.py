"""The generic job trace: one CSV row per job, read into `SimJob`s and written back.

Columns (a header line is required; column order is free; an unknown or repeated column is an
error naming it): see `TraceRow`, whose JSON schema `trace_row_schema()` is the reference
(docs/simulation-inputs.md prints it).

Invariants:
- `read_trace` returns every data row as one `SimJob`, in file order, or raises `TraceError`
  naming the file, the line, the column and what is wrong — never a bare KeyError/ValueError.
  Nothing is read lazily.
- Job ids are the 1-based data row numbers (blank lines are not rows).
- `submit_time` is either a number of seconds (≥ 0, kept as given) in every row, or an
  ISO 8601 time with a timezone in every row; ISO times become seconds since the earliest
  submit of the file, so such a trace starts at 0. Mixing the two is an error.
- `device_fraction` f (0 < f ≤ 1, whole thousandths) becomes `SimJob.device_milli = 1000·f`;
  f < 1 only with `devices == 1` and `nodes == 1`.
- `write_trace` writes only rows that `read_trace` accepts (a job that cannot be written raises
  ValueError), with numbers in `repr` form, so `read_trace(write_trace(jobs))` equals `jobs`
  when their ids are 1..n in order.
- Pure parsing: the only I/O is reading (or, for `write_trace`, writing) the given file.
"""

from __future__ import annotations

import csv
import math
from dataclasses import fields as dc_fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from scheduler.sim.model import SimJob

# Names of tenants, pools, accelerator types and priority classes (as suanli's node names).
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ACCEL_LIST = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(\|[A-Za-z0-9][A-Za-z0-9._-]{0,127})*$"


class TraceError(ValueError):
    """A malformed input line: `str()` is "FILE:LINE: FIELD: message" (LINE 1 is the header
    of a CSV file; 0 when no line applies, e.g. a whole-file problem in YAML)."""

    def __init__(self, file: str | Path, line: int, field: str, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(f"{self.file}:{line}: {field}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (multiprocessing replays)
        return (TraceError, (self.file, self.line, self.field, self.message))


def _sim_default(name: str) -> Any:
    return {f.name: f.default for f in dc_fields(SimJob)}[name]


def _parse_submit(value: Any) -> Any:
    """A number of seconds, or an ISO 8601 time that must carry a timezone."""
    if isinstance(value, str):
        s = value.strip()
        try:
            return float(s)
        except ValueError:
            pass
        try:
            when = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError("not a number of seconds nor an ISO 8601 time") from None
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("an ISO 8601 time needs a timezone (Z or ±HH:MM)")
        return when
    return value


class TraceRow(BaseModel):
    """One row of the generic job trace CSV (every column is text in the file; empty cells
    of optional columns take the default). Units: seconds, milli-cores, MiB."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="TraceRow")

    submit_time: float | AwareDatetime = Field(
        description="When the job is submitted: seconds from the trace start (a number ≥ 0), or an "
        "ISO 8601 time with a timezone (then every row must use one, and times become seconds "
        "since the earliest submit of the file)."
    )
    duration_s: float = Field(gt=0, allow_inf_nan=False,
                              description="True run time in seconds (> 0); the policy never sees it.")
    devices: int = Field(ge=0, description="Accelerator devices per node (0: CPU-only job).")
    nodes: int = Field(1, ge=1, description="Servers the job spans (a gang: all start together or none).")
    device_fraction: float = Field(
        1.0, gt=0, le=1, allow_inf_nan=False,
        description="Share of one device, in whole thousandths (0.001 .. 1); below 1 only with "
        "devices == 1 and nodes == 1. Becomes device_milli = 1000 × fraction.",
    )
    accelerator: str | None = Field(
        None, pattern=_ACCEL_LIST,
        description="Acceptable accelerator types, '|'-separated, in order of preference; empty: any type.",
    )
    tenant: str = Field(pattern=NAME, description="The org that submits the job.")
    pool: str | None = Field(None, pattern=NAME,
                             description="The tenant's pool; empty: the tenant's pool in the cluster file.")
    time_limit_s: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Time limit in seconds (> 0), what the policy sees; empty: set by the simulator's rule.",
    )
    priority: str = Field(_sim_default("priority_class"), pattern=NAME, description="Priority class name.")
    cpu_milli: int = Field(_sim_default("cpu_milli"), ge=0, description="CPU per node in milli-cores.")
    memory_mib: int = Field(_sim_default("memory_mib"), ge=0, description="Memory per node in MiB.")
    name: str = Field("", description="Free-form job name (not interpreted).")

    @field_validator("submit_time", mode="before")
    @classmethod
    def _submit(cls, value: Any) -> Any:
        return _parse_submit(value)

    @field_validator("submit_time", mode="after")
    @classmethod
    def _submit_range(cls, value: float | datetime) -> float | datetime:
        if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
            raise ValueError("seconds must be a finite number ≥ 0")
        return value

    @field_validator("device_fraction", mode="before")
    @classmethod
    def _thousandths(cls, value: Any) -> Any:
        try:
            d = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            return value  # let the float check report it
        if d.is_finite() and (d * 1000) != (d * 1000).to_integral_value():
            raise ValueError("a fraction in whole thousandths (0.001 steps)")
        return value

    @field_validator("device_fraction", mode="after")
    @classmethod
    def _fraction_shape(cls, value: float, info: ValidationInfo) -> float:
        if value < 1:
            devices, nodes = info.data.get("devices"), info.data.get("nodes")
            if devices != 1 or nodes != 1:
                raise ValueError(f"a fraction below 1 needs devices == 1 and nodes == 1, not {devices} × {nodes}")
        return value

    @field_validator("accelerator", mode="after")
    @classmethod
    def _distinct(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split("|")
            if len(set(parts)) != len(parts):
                raise ValueError("a type is listed twice")
        return value

    @property
    def device_milli(self) -> int:
        return round(self.device_fraction * 1000)

    def to_job(self, job_id: int, submit_s: float) -> SimJob:
        """The `SimJob` of this row (`submit_s`: its submit time in trace seconds)."""
        return SimJob(
            id=job_id,
            submit_time=submit_s,
            duration_s=self.duration_s,
            devices=self.devices,
            nodes=self.nodes,
            device_milli=self.device_milli,
            accelerators=tuple(self.accelerator.split("|")) if self.accelerator else (),
            tenant=self.tenant,
            pool=self.pool,
            time_limit_s=self.time_limit_s,
            priority_class=self.priority,
            cpu_milli=self.cpu_milli,
            memory_mib=self.memory_mib,
            name=self.name,
        )


COLUMNS: tuple[str, ...] = tuple(TraceRow.model_fields)
REQUIRED: tuple[str, ...] = tuple(n for n, f in TraceRow.model_fields.items() if f.is_required())


def trace_row_schema() -> dict[str, Any]:
    """The JSON schema of one trace row (printed in docs/simulation-inputs.md)."""
    schema = TraceRow.model_json_schema()
    schema["description"] = (TraceRow.__doc__ or "").strip().replace("\n    ", " ")
    return schema


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(field path, message) of a pydantic error, its input shown; later errors are counted."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    where = ".".join(str(p) for p in err["loc"]) or "row"
    msg = err["msg"].removeprefix("Value error, ")
    if err.get("type") == "string_pattern_mismatch":
        msg = "not a valid name (letters, digits, '.', '_', '-'; starting with a letter or digit)"
        if err["loc"] and err["loc"][-1] == "accelerator":
            msg += "; types are separated by '|'"
    if err.get("type") not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict | list):
        msg += f" (got {err.get('input')!r})"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return where, msg


def _read_header(path: str | Path, header: list[str]) -> list[str]:
    names = [h.strip() for h in header]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise TraceError(path, 1, n, "column repeated in the header")
        seen.add(n)
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise TraceError(path, 1, unknown[0],
                         f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"(a header line is required; known: {', '.join(COLUMNS)})")
    for n in REQUIRED:
        if n not in seen:
            raise TraceError(path, 1, n, "missing column (required)")
    return names


def read_trace(path: str | Path) -> list[SimJob]:
    """All jobs of a generic trace CSV, in file order, ids 1..n (see the module invariants)."""
    rows: list[tuple[int, TraceRow]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header: list[str] | None = None
            for cells in reader:
                line = reader.line_num
                if header is None:
                    if not any(c.strip() for c in cells):
                        raise TraceError(path, line, "header", "a header line is required first")
                    header = _read_header(path, cells)
                    continue
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if len(cells) != len(header):
                    raise TraceError(path, line, "row", f"{len(cells)} cells, the header has {len(header)}")
                # Empty cells take the defaults; `name` is kept verbatim, the others are stripped.
                data = {k: v if k == "name" else v.strip() for k, v in zip(header, cells) if (v if k == "name" else v.strip())}
                try:
                    rows.append((line, TraceRow.model_validate(data)))
                except ValidationError as exc:
                    raise TraceError(path, line, *first_error(exc)) from None
    except UnicodeDecodeError as exc:
        raise TraceError(path, 0, "file", f"not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise TraceError(path, 0, "file", f"not a CSV file ({exc})") from None
    if header is None:
        raise TraceError(path, 1, "header", "empty file: a header line is required")
    return _to_jobs(path, rows)


def _to_jobs(path: str | Path, rows: list[tuple[int, TraceRow]]) -> list[SimJob]:
    if not rows:
        return []
    iso = isinstance(rows[0][1].submit_time, datetime)
    for line, row in rows:
        if isinstance(row.submit_time, datetime) != iso:
            kind = "ISO 8601 times" if iso else "numbers of seconds"
            raise TraceError(path, line, "submit_time", f"the first row uses {kind}; every row must do the same")
    base = min(r.submit_time for _, r in rows) if iso else None  # type: ignore[type-var]
    jobs = []
    for job_id, (_, row) in enumerate(rows, start=1):
        t = row.submit_time
        submit = (t - base).total_seconds() if isinstance(t, datetime) else float(t)  # type: ignore[operator]
        jobs.append(row.to_job(job_id, submit))
    return jobs


def _num(x: float) -> str:
    return repr(float(x))


def _fraction(milli: int) -> str:
    return "" if milli == 1000 else f"0.{milli:03d}".rstrip("0")


def job_to_cells(job: SimJob) -> dict[str, str]:
    """One job as CSV cells (empty: the column's default); raises ValueError if `read_trace`
    would not accept the row."""
    cells = {
        "submit_time": _num(job.submit_time),
        "duration_s": _num(job.duration_s),
        "devices": str(job.devices),
        "nodes": str(job.nodes),
        "device_fraction": _fraction(job.device_milli) if 0 < job.device_milli <= 1000 else str(job.device_milli),
        "accelerator": "|".join(job.accelerators),
        "tenant": job.tenant,
        "pool": job.pool or "",
        "time_limit_s": "" if job.time_limit_s is None else _num(job.time_limit_s),
        "priority": job.priority_class,
        "cpu_milli": str(job.cpu_milli),
        "memory_mib": str(job.memory_mib),
        "name": job.name,
    }
    try:
        TraceRow.model_validate({k: v for k, v in cells.items() if v != ""})
    except ValidationError as exc:
        where, msg = first_error(exc)
        raise ValueError(f"job {job.id} cannot be written: {where}: {msg}") from None
    return cells


def write_trace(jobs: list[SimJob] | tuple[SimJob, ...], path: str | Path) -> None:
    """Write `jobs` as a generic trace CSV (all columns, in `COLUMNS` order). Ids are not
    written: reading assigns row numbers. Nothing is written if any job is invalid."""
    rows = [job_to_cells(j) for j in jobs]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
