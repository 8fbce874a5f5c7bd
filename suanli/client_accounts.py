"""HTTP client methods for orgs (kind, pool, status), prices, credit limits, top-ups and the
audit log; mixed into `suanli.client.Client`.

Invariants: like `Client`, every non-2xx answer raises `ApiError` and nothing here prints;
path segments are escaped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


class AccountsClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""

    def _json(self, method: str, path: str, **kw: Any) -> Any:  # provided by Client
        raise NotImplementedError

    # ------------------------------------------------------------------ orgs (center admins)
    def create_org(self, name: str, pool: str, kind: str, status: str | None = None) -> dict[str, Any]:
        """Register an org; it starts "applied" unless `status="verified"`."""
        body: dict[str, Any] = {"name": name, "pool": pool, "kind": kind}
        if status is not None:
            body["status"] = status
        return self._json("POST", "/v1/admin/orgs", json=body)  # type: ignore[no-any-return]

    def orgs(self, kind: str | None = None, pool: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("kind", kind), ("pool", pool), ("status", status)) if v is not None}
        return self._json("GET", "/v1/admin/orgs", params=params)  # type: ignore[no-any-return]

    def set_org_status(self, org: str, status: str, reason: str = "") -> dict[str, Any]:
        """status: verified (verify or reinstate) or suspended."""
        return self._json("POST", f"/v1/admin/orgs/{_seg(org)}/status", json={"status": status, "reason": reason})  # type: ignore[no-any-return]

    def set_credit_limit(self, org: str, credit_limit_fen: int) -> dict[str, Any]:
        return self._json("PUT", f"/v1/admin/orgs/{_seg(org)}/credit-limit", json={"credit_limit_fen": credit_limit_fen})  # type: ignore[no-any-return]

    def top_up(self, org: str, amount_fen: int, key: str, memo: str = "") -> dict[str, Any]:
        """Credit the org's account; the same `key` credits once. Returns the balance."""
        body = {"amount_fen": amount_fen, "key": key, "memo": memo}
        return self._json("POST", f"/v1/orgs/{_seg(org)}/topups", json=body)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ prices
    def set_price(self, accelerator_type: str, fen_per_device_hour: int, effective_from: str | None = None) -> dict[str, Any]:
        """A new price version; `effective_from` is ISO 8601 with a zone (default now)."""
        body: dict[str, Any] = {"fen_per_device_hour": fen_per_device_hour}
        if effective_from is not None:
            body["effective_from"] = effective_from
        return self._json("PUT", f"/v1/admin/prices/{_seg(accelerator_type)}", json=body)  # type: ignore[no-any-return]

    def prices(self) -> list[dict[str, Any]]:
        """Per type: the price now and scheduled changes (any signed-in user)."""
        return self._json("GET", "/v1/prices")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ audit log
    def audit(self, action: str | None = None, target: str | None = None, actor: str | None = None,
              since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        params.update({k: v for k, v in (("action", action), ("target", target), ("actor", actor), ("since", since))
                       if v is not None})
        return self._json("GET", "/v1/admin/audit", params=params)  # type: ignore[no-any-return]
