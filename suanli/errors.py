"""Typed domain errors with stable machine codes.

Invariants:
- Every error a user can cause is a `SuanliError` with a stable snake_case `code` and a
  `kind`; `api/app.py` is the one place where kinds become HTTP statuses (RFC 9457 problems)
  and the CLI prints `detail` and the offending `field`s.
- Raising one of these before commit means nothing was written: services validate first and
  write in a single transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    INVALID = "invalid"  # the request is malformed or breaks a rule (422/400)
    UNAUTHENTICATED = "unauthenticated"  # no or bad credentials (401)
    FORBIDDEN = "forbidden"  # authenticated but not allowed (403)
    NOT_FOUND = "not_found"  # absent, or not visible to the caller (404)
    CONFLICT = "conflict"  # the state forbids it now (409)
    TOO_LARGE = "too_large"  # request body over the limit (413)


@dataclass(frozen=True)
class FieldError:
    field: str  # dotted path into the request, e.g. "resources.devices_per_node"
    message: str


@dataclass
class SuanliError(Exception):
    code: str
    detail: str
    kind: Kind = Kind.INVALID
    errors: list[FieldError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def invalid(code: str, detail: str, field_name: str | None = None) -> SuanliError:
    errs = [FieldError(field_name, detail)] if field_name else []
    return SuanliError(code, detail, Kind.INVALID, errs)


def not_found(what: str, ident: object) -> SuanliError:
    return SuanliError(f"{what}_not_found", f"{what} {ident} not found", Kind.NOT_FOUND)


def conflict(code: str, detail: str) -> SuanliError:
    return SuanliError(code, detail, Kind.CONFLICT)


def forbidden(detail: str) -> SuanliError:
    return SuanliError("forbidden", detail, Kind.FORBIDDEN)


def unauthenticated(detail: str) -> SuanliError:
    return SuanliError("unauthenticated", detail, Kind.UNAUTHENTICATED)
