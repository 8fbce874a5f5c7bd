"""HTTP client methods for nodes (show, drain, undrain), the queue overview, usage over time
and readiness; mixed into `suanli.client.Client` (whose own `nodes()` lists the servers).

Invariants: like `Client`, every non-2xx answer raises `ApiError` (a 503 from `/readyz` too,
code `not_ready`) and nothing here prints; path segments are escaped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


class ClusterClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""

    def _json(self, method: str, path: str, **kw: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def node(self, name: str) -> dict[str, Any]:
        """One server: status, health, devices (job ids you may see), drain reason."""
        return self._json("GET", f"/v1/nodes/{_seg(name)}")  # type: ignore[no-any-return]

    def node_events(self, name: str) -> list[dict[str, Any]]:
        """The server's latest events, newest first (not ready, lost, device health changes)."""
        return self._json("GET", f"/v1/nodes/{_seg(name)}/events")  # type: ignore[no-any-return]

    def drain_node(self, name: str, reason: str) -> dict[str, Any]:
        """Center admins: no new jobs on the server; running ones continue."""
        return self._json("POST", f"/v1/admin/nodes/{_seg(name)}/drain", json={"reason": reason})  # type: ignore[no-any-return]

    def undrain_node(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/admin/nodes/{_seg(name)}/undrain")  # type: ignore[no-any-return]

    def queue(self) -> dict[str, Any]:
        """Pending and running jobs by org and type (other orgs folded unless you are a center admin)."""
        return self._json("GET", "/v1/queue")  # type: ignore[no-any-return]

    def usage(self, group_by: str = "org", from_: str | None = None, to: str | None = None, step: str = "day") -> dict[str, Any]:
        """Runs, device-hours and cost per hour or day of the billing time zone; `from_`/`to`
        are ISO 8601 times with a zone."""
        params = {"group_by": group_by, "step": step}
        params.update({k: v for k, v in (("from", from_), ("to", to)) if v is not None})
        return self._json("GET", "/v1/usage", params=params)  # type: ignore[no-any-return]

    def readyz(self) -> dict[str, Any]:
        return self._json("GET", "/readyz")  # type: ignore[no-any-return]
