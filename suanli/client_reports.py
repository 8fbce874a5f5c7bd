"""HTTP client methods for statements per org and month, and program reports for the funder; mixed into `suanli.client.Client`."""

from __future__ import annotations


class ReportsClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""
