"""Pydantic validation errors → a `SuanliError` naming each offending field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from suanli.errors import FieldError, Kind, SuanliError


# Pydantic names the branch of a union that failed ("str", "list[str]", "function-after[…]");
# those are not fields.
_UNION_TAGS = {"str", "int", "float", "bool", "none"}
_UNION_TAG_PREFIXES = ("function-", "list[", "dict[", "literal[", "tagged-union[", "constrained-")


def field_path(loc: Sequence[Any]) -> str:
    # Drop FastAPI's location prefix ("body", "query", …) and pydantic's union branch tags.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    parts = [p for p in parts if p not in _UNION_TAGS and not p.startswith(_UNION_TAG_PREFIXES)]
    return ".".join(parts) or "(body)"


def validation_error(errors: Sequence[dict[str, Any]], code: str = "invalid_request") -> SuanliError:
    fields: list[FieldError] = []
    seen: set[str] = set()
    for e in errors:
        path = field_path(e.get("loc", ()))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if path in seen:  # a union reports each branch; one message per field is enough
            continue
        seen.add(path)
        fields.append(FieldError(path, msg))
    detail = "; ".join(f"{f.field}: {f.message}" for f in fields) or "invalid request"
    return SuanliError(code, detail, Kind.INVALID, fields)
