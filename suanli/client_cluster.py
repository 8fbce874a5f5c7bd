"""HTTP client methods for nodes (drain, health), the queue overview, usage over time and readiness; mixed into `suanli.client.Client`."""

from __future__ import annotations


class ClusterClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""
