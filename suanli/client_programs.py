"""HTTP client methods for subsidy programs and voucher grants (center admins); mixed into
`suanli.client.Client`.

Invariants: rates are sent as exact decimal strings (`"0.3"`), amounts as integer fen,
times as ISO 8601 text; like every `Client` method these raise `ApiError` / `ApiUnreachable`
and print nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote


def _seg(value: str) -> str:
    return quote(value, safe="")


def _when(at: datetime | str | None) -> str | None:
    return at.isoformat() if isinstance(at, datetime) else at


class ProgramsClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""

    def _json(self, method: str, path: str, **kw: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def create_program(self, name: str, budget_fen: int, rate: str | Decimal, valid_from: datetime | str,
                       valid_until: datetime | str, cap_per_org_year_fen: int | None = None,
                       org_kinds: list[str] | None = None, accelerator_types: list[str] | None = None) -> dict[str, Any]:
        """Create a subsidy program; `rate` like "0.3" (a Decimal is sent as its text)."""
        body = {"name": name, "budget_fen": budget_fen, "rate": str(rate), "cap_per_org_year_fen": cap_per_org_year_fen,
                "org_kinds": org_kinds or [], "accelerator_types": accelerator_types or [],
                "valid_from": _when(valid_from), "valid_until": _when(valid_until)}
        return self._json("POST", "/v1/admin/programs", json=body)  # type: ignore[no-any-return]

    def programs(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/admin/programs")  # type: ignore[no-any-return]

    def program(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/admin/programs/{_seg(name)}")  # type: ignore[no-any-return]

    def grant_voucher(self, program: str, org: str, face_fen: int, expires_at: datetime | str,
                      valid_from: datetime | str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"org": org, "face_fen": face_fen, "expires_at": _when(expires_at)}
        if valid_from is not None:
            body["valid_from"] = _when(valid_from)
        return self._json("POST", f"/v1/admin/programs/{_seg(program)}/vouchers", json=body)  # type: ignore[no-any-return]

    def vouchers(self, org: str | None = None, program: str | None = None, active: bool | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if org is not None:
            params["org"] = org
        if program is not None:
            params["program"] = program
        if active is not None:
            params["active"] = "true" if active else "false"
        return self._json("GET", "/v1/admin/vouchers", params=params)  # type: ignore[no-any-return]

    def revoke_voucher(self, voucher_id: int, reason: str = "") -> dict[str, Any]:
        return self._json("POST", f"/v1/admin/vouchers/{voucher_id}/revoke", json={"reason": reason})  # type: ignore[no-any-return]
