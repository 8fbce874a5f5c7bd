"""HTTP client for the suanli API, used by the CLI and by users' scripts.

    from suanli.client import Client
    c = Client.from_config()              # ~/.config/suanli/config.toml, SUANLI_SERVER/SUANLI_TOKEN
    job = c.submit({"name": "t", "resources": {"accelerator": "nvidia-a100-80g"}, "command": "nvidia-smi"})
    c.wait(job["id"])

Invariants: every non-2xx answer raises `ApiError` carrying the problem's `code`, `detail`
and field errors; an unreachable server raises `ApiUnreachable`; nothing here prints.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from suanli.client_accounts import AccountsClient
from suanli.client_cluster import ClusterClient
from suanli.client_identity import IdentityClient
from suanli.client_programs import ProgramsClient
from suanli.client_reports import ReportsClient

DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "suanli" / "config.toml"


def write_config(server: str, token: str, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'server = "{server}"\ntoken = "{token}"\n')
    return path


@dataclass
class ApiError(Exception):
    status: int
    code: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class ApiUnreachable(Exception):
    pass


class Client(AccountsClient, ProgramsClient, ReportsClient, IdentityClient, ClusterClient):
    def __init__(self, server: str, token: str | None, http: httpx.Client | None = None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.http = http or httpx.Client(timeout=timeout)

    @classmethod
    def from_config(cls, server: str | None = None, token: str | None = None) -> Client:
        cfg: dict[str, Any] = {}
        path = config_path()
        if path.exists():
            cfg = tomllib.loads(path.read_text())
        return cls(
            server or os.environ.get("SUANLI_SERVER") or cfg.get("server") or DEFAULT_SERVER,
            token or os.environ.get("SUANLI_TOKEN") or cfg.get("token"),
        )

    # ------------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            r = self.http.request(method, self.server + path, headers=headers, **kw)
        except httpx.TransportError as e:
            raise ApiUnreachable(f"cannot reach the suanli API at {self.server} ({e})") from e
        if r.status_code >= 400:
            try:
                p = r.json()
                raise ApiError(r.status_code, p.get("code", "error"), p.get("detail", r.text), p.get("errors", []))
            except ValueError:
                raise ApiError(r.status_code, "error", r.text or r.reason_phrase) from None
        return r

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, path, **kw).json()

    # ------------------------------------------------------------------ jobs
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v1/jobs", json=spec)  # type: ignore[no-any-return]

    def submit_yaml(self, text: str) -> dict[str, Any]:
        return self._json("POST", "/v1/jobs", content=text.encode(), headers={"Content-Type": "application/yaml"})  # type: ignore[no-any-return]

    def jobs(self, statuses: list[str] | None = None, limit: int = 100, before_id: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if statuses:
            params["status"] = statuses
        if before_id:
            params["before_id"] = before_id
        return self._json("GET", "/v1/jobs", params=params)  # type: ignore[no-any-return]

    def job(self, job_id: int) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/jobs/{job_id}/events")  # type: ignore[no-any-return]

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def logs(self, job_id: int, offset: int = 0) -> tuple[bytes, int, str]:
        """(bytes from offset, next offset, job status)."""
        r = self._request("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})
        return r.content, int(r.headers.get("X-Log-Offset", offset)), r.headers.get("X-Job-Status", "")

    def wait(self, job_id: int, timeout: float | None = None, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll until the job ends; returns the final job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(poll_s)

    # ------------------------------------------------------------------ cluster and billing
    def nodes(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/nodes")  # type: ignore[no-any-return]

    def balance(self, org: str | None = None, recent: int = 10) -> dict[str, Any]:
        params: dict[str, Any] = {"recent": recent}
        if org:
            params["org"] = org
        return self._json("GET", "/v1/balance", params=params)  # type: ignore[no-any-return]

    def healthz(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ fair-share model (center admins)
    def set_quota(self, name: str, accelerator_type: str, guaranteed: int, limit: int | None = None,
                  scope: str = "org") -> dict[str, Any]:
        """Set the guarantee and limit of an org (or, with scope="pool", a pool) for a type."""
        body = {"guaranteed": guaranteed, "limit": limit}
        return self._json("PUT", f"/v1/admin/quotas/{_seg(scope)}/{_seg(name)}/{_seg(accelerator_type)}", json=body)  # type: ignore[no-any-return]

    def delete_quota(self, name: str, accelerator_type: str, scope: str = "org") -> None:
        self._request("DELETE", f"/v1/admin/quotas/{_seg(scope)}/{_seg(name)}/{_seg(accelerator_type)}")

    def quotas(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/admin/quotas")  # type: ignore[no-any-return]

    def set_shares(self, kind: str, name: str, shares: int) -> dict[str, Any]:
        """kind: pool, org or project (name ORG/PROJECT)."""
        return self._json("PUT", f"/v1/admin/shares/{_seg(kind)}/{quote(name, safe='/')}", json={"shares": shares})  # type: ignore[no-any-return]

    def shares(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/admin/shares")  # type: ignore[no-any-return]

    def set_priority_class(self, name: str, value: float, preemptible: bool = False,
                           description: str | None = None) -> dict[str, Any]:
        body = {"value": value, "preemptible": preemptible, "description": description}
        return self._json("PUT", f"/v1/admin/priority-classes/{_seg(name)}", json=body)  # type: ignore[no-any-return]

    def priority_classes(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/priority-classes")  # type: ignore[no-any-return]

    def create_project(self, org: str, name: str) -> dict[str, Any]:
        return self._json("POST", "/v1/admin/projects", json={"org": org, "name": name})  # type: ignore[no-any-return]


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")
