"""HTTP client methods for who-am-I, tokens, org members, pools and node agents' tokens; mixed
into `suanli.client.Client`.

Invariants: like `Client`, every non-2xx answer raises `ApiError` and nothing here prints;
path segments are escaped. Secrets come back only from `create_token`, `add_member` and
`node_token` (the `token` field); keep them, they are never shown again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


def _expiry(expires_in: str | None, expires_at: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("expires_in", expires_in), ("expires_at", expires_at)) if v is not None}


class IdentityClient:
    """Methods use `self._json(method, path, **kw)` / `self._request(...)` of `Client`."""

    def _json(self, method: str, path: str, **kw: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def _request(self, method: str, path: str, **kw: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def me(self) -> dict[str, Any]:
        """Who this client's token belongs to: user, role, org, node, token name and expiry."""
        return self._json("GET", "/v1/me")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ tokens
    def create_token(self, name: str, expires_in: str | None = None, expires_at: str | None = None) -> dict[str, Any]:
        """A new token for yourself; the answer's `token` is the secret, shown only now."""
        return self._json("POST", "/v1/tokens", json={"name": name, **_expiry(expires_in, expires_at)})  # type: ignore[no-any-return]

    def tokens(self, user: str | None = None, include_inactive: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"include_inactive": include_inactive}
        if user is not None:
            params["user"] = user
        return self._json("GET", "/v1/tokens", params=params)  # type: ignore[no-any-return]

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/v1/tokens/{int(token_id)}")

    # ------------------------------------------------------------------ members
    def add_member(self, org: str, name: str, role: str = "member", expires_in: str | None = None) -> dict[str, Any]:
        """A new user of the org; the answer's `token.token` is their first token (shown only now)."""
        body: dict[str, Any] = {"name": name, "role": role, **_expiry(expires_in, None)}
        return self._json("POST", f"/v1/orgs/{_seg(org)}/members", json=body)  # type: ignore[no-any-return]

    def members(self, org: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/orgs/{_seg(org)}/members")  # type: ignore[no-any-return]

    def set_member_role(self, org: str, user: str, role: str) -> dict[str, Any]:
        return self._json("PATCH", f"/v1/orgs/{_seg(org)}/members/{_seg(user)}", json={"role": role})  # type: ignore[no-any-return]

    def remove_member(self, org: str, user: str) -> None:
        """Revoke all the member's tokens and disable the user."""
        self._request("DELETE", f"/v1/orgs/{_seg(org)}/members/{_seg(user)}")

    # ------------------------------------------------------------------ pools and node agents
    def create_pool(self, name: str, shares: int = 1) -> dict[str, Any]:
        return self._json("POST", "/v1/admin/pools", json={"name": name, "shares": shares})  # type: ignore[no-any-return]

    def pools(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/pools")  # type: ignore[no-any-return]

    def node_token(self, node: str, expires_in: str | None = None, expires_at: str | None = None) -> dict[str, Any]:
        """A token for one server's agent (center admins); `token` is the secret, shown only now."""
        return self._json("POST", f"/v1/admin/nodes/{_seg(node)}/token", json=_expiry(expires_in, expires_at))  # type: ignore[no-any-return]
