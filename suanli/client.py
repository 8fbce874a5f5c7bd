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
import re
import time
import tomllib
from collections.abc import Iterator
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
_RANK_PREFIX = re.compile(rb"^\[rank (\d+)\] ")  # a line of the merged log view
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_LOST"}


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
            raise _api_error(r)
        return r

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, path, **kw).json()

    # ------------------------------------------------------------------ jobs
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None, retries: int = 0) -> dict[str, Any]:
        """Submit a spec. With an `idempotency_key`, a submit whose answer was lost (the
        connection broke) is retried up to `retries` times: the server returns the job the
        first attempt created instead of a second one."""
        return self._submit(idempotency_key, retries, json=spec)

    def upload_code(self, zipped: bytes) -> dict[str, Any]:
        """Upload a job's code (a zip, `suanli.code.pack`): {"code": "sha256:…", "bytes", "files"}."""
        return self._json("POST", "/v1/code", content=zipped,  # type: ignore[no-any-return]
                          headers={"Content-Type": "application/zip"}, timeout=600)

    def submit_yaml(self, text: str, idempotency_key: str | None = None, retries: int = 0) -> dict[str, Any]:
        return self._submit(idempotency_key, retries, content=text.encode(), headers={"Content-Type": "application/yaml"})

    def _submit(self, key: str | None, retries: int, **kw: Any) -> dict[str, Any]:
        if key is not None:
            kw["headers"] = {**kw.get("headers", {}), "Idempotency-Key": key}
        tries = retries + 1 if key else 1  # never retry without a key: it could submit twice
        for attempt in range(1, tries + 1):
            try:
                return self._json("POST", "/v1/jobs", **kw)  # type: ignore[no-any-return]
            except ApiUnreachable:
                if attempt == tries:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def jobs(self, statuses: list[str] | None = None, limit: int = 100, cursor: str | None = None, *,
             project: str | None = None, user: str | None = None, accelerator_type: str | None = None,
             org: str | None = None, since: str | None = None, sort: str | None = None) -> dict[str, Any]:
        """One page: {"items": [...], "next_cursor": str | None}."""
        params: dict[str, Any] = {"limit": limit}
        for k, v in (("status", statuses or None), ("cursor", cursor), ("project", project), ("user", user),
                     ("type", accelerator_type), ("org", org), ("since", since), ("sort", sort)):
            if v:
                params[k] = v
        return self._json("GET", "/v1/jobs", params=params)  # type: ignore[no-any-return]

    def all_jobs(self, statuses: list[str] | None = None, page_size: int = 500, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every job matching the filters, page after page (keyset pages: jobs submitted
        meanwhile are not mixed in, none is repeated or skipped)."""
        cursor = None
        while True:
            page = self.jobs(statuses, page_size, cursor, **filters)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def job(self, job_id: int) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/jobs/{job_id}/events")  # type: ignore[no-any-return]

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def hold(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/hold")  # type: ignore[no-any-return]

    def release(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/release")  # type: ignore[no-any-return]

    def requeue(self, job_id: int) -> dict[str, Any]:
        """Center admins: stop a running job and put it back in the queue."""
        return self._json("POST", f"/v1/jobs/{job_id}/requeue")  # type: ignore[no-any-return]

    def logs(self, job_id: int, offset: int | str = 0, rank: int | None = None) -> tuple[bytes, int | str, str]:
        """(bytes from `offset`, where to continue, job status). With `rank` (or for a
        single-node job) one rank's log and an int offset; else a multi-node job's merged
        view (lines prefixed `[rank N] `), continued by the cursor string returned."""
        params: dict[str, Any] = {"rank": rank} if rank is not None else {}
        if isinstance(offset, str):
            params["cursor"] = offset
        else:
            params["offset"] = offset
        r = self._request("GET", f"/v1/jobs/{job_id}/logs", params=params)
        nxt: int | str = int(r.headers["X-Log-Offset"]) if "X-Log-Offset" in r.headers else r.headers.get("X-Log-Cursor", "")
        return r.content, nxt, r.headers.get("X-Job-Status", "")

    def follow_logs(self, job_id: int, offset: int = 0, retries: int = 3, rank: int | None = None) -> Iterator[bytes]:
        """The job's output from `offset` as it is written, until the job has ended (one
        streamed request). A dropped connection resumes from the last byte received (in the
        merged view of a multi-node job: from the last whole line of each rank), up to
        `retries` times in a row; then `ApiUnreachable`."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        failures = 0
        cursor: list[int] | None = None  # the merged view's per-rank offsets, once known
        while True:
            params: dict[str, Any] = {"follow": "true"}
            if rank is not None:
                params["rank"] = rank
            if cursor is not None:
                params["cursor"] = ",".join(map(str, cursor))
            else:
                params["offset"] = offset
            try:
                with self.http.stream("GET", f"{self.server}/v1/jobs/{job_id}/logs", headers=headers, params=params,
                                      timeout=httpx.Timeout(30.0, read=None)) as r:  # quiet jobs send nothing for long
                    if r.status_code >= 400:
                        r.read()
                        raise _api_error(r)
                    if "X-Log-Cursor" in r.headers:  # merged: the server sends whole prefixed lines
                        cursor = [int(x) for x in r.headers["X-Log-Cursor"].split(",")]
                        yield from self._merged_lines(r.iter_bytes(), cursor)
                        failures = 0
                        return
                    for chunk in r.iter_bytes():
                        offset += len(chunk)
                        failures = 0
                        yield chunk
                return
            except httpx.TransportError as e:
                failures += 1
                if failures > retries:
                    raise ApiUnreachable(f"lost the log stream from {self.server} ({e})") from e
                time.sleep(0.5 * failures)

    @staticmethod
    def _merged_lines(chunks: Iterator[bytes], cursor: list[int]) -> Iterator[bytes]:
        """Whole `[rank N] ` lines from a merged stream, advancing `cursor` (in place) by the
        log bytes each line stands for, so a resumed stream starts after the last line shown."""
        pending = b""
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                m = _RANK_PREFIX.match(line)
                if m and int(m.group(1)) < len(cursor):
                    cursor[int(m.group(1))] += len(line) - m.end() + 1
                yield line + b"\n"
        if pending:
            yield pending

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


def _api_error(r: httpx.Response) -> ApiError:
    try:
        p = r.json()
        return ApiError(r.status_code, p.get("code", "error"), p.get("detail", r.text), p.get("errors", []))
    except ValueError:
        return ApiError(r.status_code, "error", r.text or r.reason_phrase)


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")
