"""HTTP client methods for subsidy programs and voucher grants; mixed into `suanli.client.Client`."""

from __future__ import annotations


class ProgramsClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""
