"""HTTP client methods for pools, members, tokens and who-am-I; mixed into `suanli.client.Client`."""

from __future__ import annotations


class IdentityClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""
