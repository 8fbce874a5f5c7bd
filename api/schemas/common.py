"""Shared schema pieces: RFC 9457 problem details, duration and size parsing."""

from __future__ import annotations

import re

from pydantic import BaseModel

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SIZE = re.compile(r"^(\d+)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MIB = {None: 1, "Mi": 1, "M": 1, "Gi": 1024, "G": 1024, "Ti": 1024 * 1024, "T": 1024 * 1024}


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldProblem] = []


def parse_duration(value: str | int) -> int:
    """Seconds from `90`, `"90s"`, `"10m"`, `"2h"`, `"1d"` or combinations like `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '2h30m'")
    if isinstance(value, int):
        seconds = value
    else:
        text = value.strip()
        if text.isdigit():
            seconds = int(text)
        else:
            m = _DURATION.match(text)
            if not text or m is None:
                raise ValueError(f"{value!r} is not a duration (use e.g. 90, '90s', '10m', '2h', '1h30m', '1d')")
            d, h, mi, s = (int(x) if x else 0 for x in m.groups())
            seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


def parse_memory_mib(value: str | int) -> int:
    """MiB from an int (MiB) or `"512Mi"`, `"16Gi"`, `"1Ti"` (K/M/G/T read as binary units too)."""
    if isinstance(value, bool):
        raise ValueError("memory is a number of MiB or a string like '16Gi'")
    if isinstance(value, int):
        mib = value
    else:
        m = _SIZE.match(value.strip())
        if m is None or m.group(2) in ("Ki", "K"):
            raise ValueError(f"{value!r} is not a memory size (use e.g. '512Mi', '16Gi')")
        mib = int(m.group(1)) * _MIB[m.group(2)]
    if mib <= 0:
        raise ValueError("must be positive")
    return mib
