"""HTTP client methods for orgs (kind, pool, status), prices, credit limits and the audit log; mixed into `suanli.client.Client`."""

from __future__ import annotations


class AccountsClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""
