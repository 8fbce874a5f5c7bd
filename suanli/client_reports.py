"""HTTP client methods for statements per org and month, and program reports for the funder;
mixed into `suanli.client.Client`.

Invariants: like `Client`, every non-2xx answer raises `ApiError` and nothing here prints;
path segments are escaped; JSON comes back parsed, CSV as the text the server sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


class ReportsClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""

    def _json(self, method: str, path: str, **kw: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:  # provided by Client
        raise NotImplementedError

    def statement(self, org: str, month: str) -> dict[str, Any]:
        """The org's statement for `month` (YYYY-MM, billing time zone) as JSON."""
        return self._json("GET", f"/v1/orgs/{_seg(org)}/statements/{_seg(month)}")  # type: ignore[no-any-return]

    def statement_csv(self, org: str, month: str) -> str:
        """The same statement as CSV (one row per run, then a TOTAL row)."""
        return self._request("GET", f"/v1/orgs/{_seg(org)}/statements/{_seg(month)}", params={"format": "csv"}).text

    @staticmethod
    def _months(month: str | None, from_: str | None, to: str | None) -> dict[str, str]:
        return {k: v for k, v in (("month", month), ("from", from_), ("to", to)) if v is not None}

    def program_report(self, program: str, month: str | None = None, from_: str | None = None,
                       to: str | None = None) -> dict[str, Any]:
        """What a program paid per org per month (center admins); no months: all of them."""
        return self._json("GET", f"/v1/admin/programs/{_seg(program)}/report",  # type: ignore[no-any-return]
                          params=self._months(month, from_, to))

    def program_report_csv(self, program: str, month: str | None = None, from_: str | None = None,
                           to: str | None = None) -> str:
        """The program's job-level evidence as CSV: one row per run it paid a part of."""
        params = {**self._months(month, from_, to), "format": "csv"}
        return self._request("GET", f"/v1/admin/programs/{_seg(program)}/report", params=params).text
