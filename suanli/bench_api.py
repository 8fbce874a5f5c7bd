"""`suanli bench api`: job submissions per second over HTTP on PostgreSQL, and list latency
with many jobs stored.

Setup: a throwaway PostgreSQL database `suanli_bench_<random>` on 127.0.0.1:5432 (dropped at
the end, even on error; `--database-url` uses a given one and keeps it), migrated and seeded
with the demo tenancy (orgs, members, tokens); the real API (`uvicorn --factory
api.app:app_from_env`, `--server-workers` processes, access log off, per-token rate limit
raised so the bench measures the service, not the limiter) on a free loopback port.

Load: an asyncio HTTP/1.1 client (keep-alive, `--clients` connections, one request in flight
per connection, closed loop) in this process. It is deliberately small: pre-built request
bytes and a Content-Length parser, so that the client costs far less CPU than the server
(the machine has 2 cores; the client's CPU time is reported so the reader can judge).

Phases, in this order:
- `healthz`: GET /healthz (one trivial query) — the same-run baseline: the stack's ceiling
  on this machine (uvicorn + FastAPI + a database round trip);
- `submit`: POST /v1/jobs (authenticated, validated, one job row + its event committed),
  `--submissions` requests spread over the demo members' tokens;
- `list`: after `--stored` jobs are bulk-inserted (SQL, not the API: we measure reading),
  GET /v1/jobs?limit=50 as the center admin (all orgs), first pages and filtered pages.
Latency is measured per request, send to last byte; percentiles are nearest-rank.

JSON keys (stable): database, server_workers, clients, healthz / submit / list {requests,
wall_s, per_s, ms {p50, p95, p99, max}, errors}, stored_jobs, client_cpu_s,
submit_vs_healthz (submit.per_s / healthz.per_s), targets {submit_per_s: 500, submit_p99_ms: 50}.

Errors: bad options → BenchError code 2 naming the option; PostgreSQL unreachable or the
server not starting → code 6.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from suanli.bench_ledger import BenchError, bench_database, percentiles

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]

SPEC = {"name": "bench", "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 1, "cpus_per_node": 1,
                                       "memory_per_node": 256}, "command": "python train.py", "time_limit": "1h"}


def _request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, (await reader.readexactly(length) if length else b"")


async def _load(port: int, requests: list[bytes], clients: int) -> dict[str, Any]:
    """Send every request once over `clients` keep-alive connections; latencies and errors."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    sample: list[str] = []  # the first error's body, to say what went wrong
    it = iter(requests)

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in it:
                t0 = time.perf_counter()
                writer.write(req)
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    errors[status] = errors.get(status, 0) + 1
                    if not sample:
                        sample.append(body[:300].decode(errors="replace"))
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": len(latencies), "wall_s": round(wall, 2), "per_s": round(len(latencies) / wall, 1),
            "ms": percentiles(latencies), "errors": {str(k): v for k, v in sorted(errors.items())},
            **({"first_error": sample[0]} if sample else {})}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(server_workers: int, clients: int, submissions: int, stored: int, database_url: str | None) -> None:
    if not 1 <= server_workers <= 16:
        raise BenchError(f"--server-workers must be between 1 and 16, got {server_workers}", 2)
    if not 1 <= clients <= 256:
        raise BenchError(f"--clients must be between 1 and 256, got {clients}", 2)
    if submissions < 10:
        raise BenchError(f"--submissions must be at least 10, got {submissions}", 2)
    if stored < 0:
        raise BenchError(f"--stored must be at least 0, got {stored}", 2)
    if database_url is not None and not database_url.startswith("postgresql"):
        raise BenchError("--database-url must be a PostgreSQL URL (postgresql+psycopg://user@host:port/db)", 2)


def bench_api(server_workers: int = 2, clients: int = 32, submissions: int = 5000, stored: int = 100_000,
              database_url: str | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring); raises BenchError."""
    _check(server_workers, clients, submissions, stored, database_url)
    with bench_database(database_url) as (url, kind):
        return _run(url, kind, server_workers, clients, submissions, stored)


def _run(url: str, kind: str, server_workers: int, clients: int, submissions: int, stored: int) -> dict[str, Any]:
    from suanli.cluster import demo_cluster
    from suanli.db.engine import Database, migrate
    from suanli.demo import seed

    migrate(url)
    data_dir = Path(tempfile.mkdtemp(prefix="suanli-bench-api-"))
    db = Database(url)
    try:
        tokens = seed(db, data_dir, demo_cluster())
        _register_nodes(db)
    finally:
        db.dispose()
    port = _free_port()
    env = dict(os.environ, SUANLI_DATABASE_URL=url, SUANLI_DATA_DIR=str(data_dir), SUANLI_RATE_LIMIT_PER_S="1000000",
               SUANLI_RATE_LIMIT_BURST="1000000")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(server_workers), "--no-access-log", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait_ready(port, server)
        cpu0 = time.process_time()
        members = [tokens.member, tokens.other_member]
        body = json.dumps(SPEC).encode()
        result: dict[str, Any] = {"database": kind, "server_workers": server_workers, "clients": clients}
        warm = [_request("GET", "/healthz", tokens.admin)] * 200
        asyncio.run(_load(port, warm, clients))
        result["healthz"] = asyncio.run(_load(port, [_request("GET", "/healthz", tokens.admin)] * submissions, clients))
        subs = [_request("POST", "/v1/jobs", members[i % 2], body) for i in range(submissions)]
        result["submit"] = asyncio.run(_load(port, subs, clients))
        _bulk_jobs(url, stored)
        result["stored_jobs"] = stored + submissions
        lists = [_request("GET", "/v1/jobs?limit=50" + ("&status=PENDING" if i % 2 else ""), tokens.admin)
                 for i in range(max(200, submissions // 10))]
        result["list"] = asyncio.run(_load(port, lists, min(clients, 8)))
        result["client_cpu_s"] = round(time.process_time() - cpu0, 2)
        result["submit_vs_healthz"] = round(result["submit"]["per_s"] / result["healthz"]["per_s"], 2)
        result["targets"] = {"submit_per_s": 500, "submit_p99_ms": 50}
        return result
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def _register_nodes(db: Any) -> None:
    """The demo servers, registered the way their agents do (the heartbeat service)."""
    from suanli import nodes as node_service
    from suanli.cluster import demo_cluster
    from scheduler.types import Device, NodeReport

    for s in demo_cluster().servers:
        node_service.heartbeat(db, NodeReport(
            name=s.name, accelerator_type=s.accelerator_type, cpus=s.cpus, memory_mb=s.memory_mb,
            devices=tuple(Device(i, f"{s.name}-{i}", s.model, s.device_memory_mb) for i in range(s.devices)),
            labels={"rack": s.rack or ""}))


def _wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.poll() is not None:
            err = server.stderr.read().decode(errors="replace")[-2000:] if server.stderr else ""
            raise BenchError(f"the API server exited ({server.returncode}): {err}", 6)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError("the API server did not become ready within 60 s", 6)


def _bulk_jobs(url: str, n: int) -> None:
    """Insert `n` finished jobs straight into the database (a copy of the submitted rows with
    terminal statuses), in batches: the list phase measures reading, not writing."""
    if n <= 0:
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as c:
            cols = [r[0] for r in c.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' AND column_name <> 'id' "
                "ORDER BY ordinal_position"))]
            names = ", ".join(f'"{x}"' for x in cols)
            src = ", ".join("'SUCCEEDED'" if x == "status" else f'"{x}"' for x in cols)
            template = c.execute(text("SELECT min(id) FROM jobs")).scalar()
            done = 0
            while done < n:
                k = min(10_000, n - done)
                c.execute(text(f"INSERT INTO jobs ({names}) SELECT {src} FROM jobs, generate_series(1, :k) "
                               f"WHERE jobs.id = :t"), {"k": k, "t": template})
                done += k
            c.execute(text("ANALYZE jobs"))
    finally:
        engine.dispose()


def register(bench_app: typer.Typer) -> None:
    """Add `suanli bench api` to the bench app."""
    from suanli.cli import fail, out, print_json

    @bench_app.command("api")
    def bench_api_command(
        server_workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 2,
        clients: Annotated[int, typer.Option(help="Concurrent keep-alive connections")] = 32,
        submissions: Annotated[int, typer.Option(help="Jobs submitted over HTTP")] = 5000,
        stored: Annotated[int, typer.Option(help="Jobs stored before the list phase")] = 100_000,
        database_url: Annotated[str | None, typer.Option(
            help="Use this PostgreSQL database (kept) instead of a throwaway one on 127.0.0.1:5432")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Job submissions per second and p50/p99 over HTTP on PostgreSQL, and list latency
        with many jobs stored; /healthz in the same run is the baseline."""
        try:
            result = bench_api(server_workers, clients, submissions, stored, database_url)
        except BenchError as e:
            fail(str(e), e.code)
        if as_json:
            print_json(result)
            return
        for phase in ("healthz", "submit", "list"):
            p = result[phase]
            out.print(f"{phase:<8} {p['requests']:>7} requests  {p['per_s']:>8} /s  p50 {p['ms']['p50']} ms  "
                      f"p99 {p['ms']['p99']} ms  errors {p['errors']}")
        out.print(f"submit vs healthz {result['submit_vs_healthz']}  client cpu {result['client_cpu_s']} s")
