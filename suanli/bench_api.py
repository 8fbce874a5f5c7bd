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
  `--submissions` requests spread over the demo members' tokens, closed loop: how fast the
  server goes when every client waits for its answer;
- `submit_paced`: the same requests offered open loop at `--rate` per second (default 500,
  the target; about 5 s of them, same connections): the latency clients see at that rate,
  counted from when each request was due;
- `list`: after `--stored` jobs are bulk-inserted (SQL, not the API: we measure reading),
  GET /v1/jobs?limit=50 as the center admin (all orgs), first pages and filtered pages.
Latency is measured per request, send (or due) to last byte; percentiles are nearest-rank.
Each phase also reports `server_cpu_ms`: the CPU time (user + system, from /proc) the uvicorn
processes spent per request during it — unlike requests per second, nearly independent of
what else loads the machine, so runs on a shared machine can be compared by it — and
`db_cpu_ms`, the same for the PostgreSQL backends serving the bench database (when
PostgreSQL runs on this machine).

JSON keys (stable): database, server_workers, clients, healthz / submit / submit_paced / list
{requests, wall_s, per_s, ms {p50, p95, p99, max}, errors, server_cpu_ms, db_cpu_ms;
submit_paced also offered_per_s; absent with --rate 0}, stored_jobs (bulk-inserted plus
every submission of the run), client_cpu_s,
with `--compare-sync` also submit_sync / submit_sync_paced (a second server, same database,
without the async submit path: `SUANLI_SUBMIT_POOL_SIZE=0`) and submit_vs_sync,
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
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from suanli.bench_ledger import BenchError, bench_database, percentiles, report

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


async def _load(port: int, requests: list[bytes], clients: int, rate: float | None = None) -> dict[str, Any]:
    """Send every request once over `clients` keep-alive connections; latencies and errors.
    Closed loop (each connection sends its next request when the last answer is in), or, with
    `rate`, open loop: request i is due at start + i / rate and its latency counts from then,
    so time spent waiting for a free connection is counted too (no coordinated omission)."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    sample: list[str] = []  # the first error's body, to say what went wrong
    it = iter(enumerate(requests))
    start = time.perf_counter()

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i, req in it:
                t0 = time.perf_counter()
                if rate is not None:
                    due = start + i / rate
                    if due > t0:
                        await asyncio.sleep(due - t0)
                    t0 = due
                writer.write(req)
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    errors[status] = errors.get(status, 0) + 1
                    if not sample:
                        sample.append(body[:300].decode(errors="replace"))
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {"requests": len(latencies), "wall_s": round(wall, 2), "per_s": round(len(latencies) / wall, 1),
            "ms": percentiles(latencies), "errors": {str(k): v for k, v in sorted(errors.items())},
            **({"first_error": sample[0]} if sample else {})}


def _server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and all its descendants so far, from
    /proc (uvicorn's workers are its children); 0.0 where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            # Fields after the command (which may hold spaces) start at ") ": utime, stime are 14, 15.
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue  # a process that just ended
    return total


def _db_cpu_s(dbname: str) -> float:
    """CPU seconds so far of the PostgreSQL backends serving `dbname` on this machine (their
    process title is `postgres: ... <user> <dbname> <client>`); 0.0 when PostgreSQL runs
    elsewhere. Backends that exit between two readings are missed, which the API's
    connection pool makes rare."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
            if not title or title[0] != b"postgres:" or dbname.encode() not in title:
                continue
            fields = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def _phase(server: subprocess.Popen[bytes], dbname: str, port: int, requests: list[bytes], clients: int,
           rate: float | None = None) -> dict[str, Any]:
    """`_load`, plus the CPU per request of the server and of its database backends during it."""
    cpu0, db0 = _server_cpu_s(server.pid), _db_cpu_s(dbname)
    result = asyncio.run(_load(port, requests, clients, rate))
    n = max(1, result["requests"])
    result["server_cpu_ms"] = round((_server_cpu_s(server.pid) - cpu0) * 1000 / n, 2)
    result["db_cpu_ms"] = round((_db_cpu_s(dbname) - db0) * 1000 / n, 2)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(server_workers: int, clients: int, submissions: int, stored: int, database_url: str | None,
           rate: float = 500.0) -> None:
    if not 1 <= server_workers <= 16:
        raise BenchError(f"--server-workers must be between 1 and 16, got {server_workers}", 2)
    if not 1 <= clients <= 256:
        raise BenchError(f"--clients must be between 1 and 256, got {clients}", 2)
    if submissions < 10:
        raise BenchError(f"--submissions must be at least 10, got {submissions}", 2)
    if stored < 0:
        raise BenchError(f"--stored must be at least 0, got {stored}", 2)
    if not 0 <= rate <= 100_000:
        raise BenchError(f"--rate must be between 0 (no paced phase) and 100000, got {rate:g}", 2)
    if database_url is not None and not database_url.startswith("postgresql"):
        raise BenchError("--database-url must be a PostgreSQL URL (postgresql+psycopg://user@host:port/db)", 2)


def bench_api(server_workers: int = 2, clients: int = 32, submissions: int = 5000, stored: int = 100_000,
              database_url: str | None = None, rate: float = 500.0, compare_sync: bool = False) -> dict[str, Any]:
    """Run the benchmark (module docstring); raises BenchError."""
    _check(server_workers, clients, submissions, stored, database_url, rate)
    with bench_database(database_url) as (url, kind):
        return _run(url, kind, server_workers, clients, submissions, stored, rate, compare_sync)


def _run(url: str, kind: str, server_workers: int, clients: int, submissions: int, stored: int,
         rate: float, compare_sync: bool) -> dict[str, Any]:
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
    dbname = url.rsplit("/", 1)[1].split("?", 1)[0]
    server = _server(url, data_dir, port, server_workers)
    sync_port = _free_port() if compare_sync else 0
    sync_server = _server(url, data_dir, sync_port, server_workers, submit_pool_size=0) if compare_sync else None
    try:
        _wait_ready(port, server)
        if sync_server is not None:
            _wait_ready(sync_port, sync_server)
        cpu0 = time.process_time()
        members = [tokens.member, tokens.other_member]
        body = json.dumps(SPEC).encode()
        result: dict[str, Any] = {"database": kind, "server_workers": server_workers, "clients": clients}
        warm = [_request("GET", "/healthz", tokens.admin)] * 200
        asyncio.run(_load(port, warm, clients))
        result["healthz"] = _phase(server, dbname, port, [_request("GET", "/healthz", tokens.admin)] * submissions, clients)
        subs = [_request("POST", "/v1/jobs", members[i % 2], body) for i in range(submissions)]
        result["submit"] = _phase(server, dbname, port, subs, clients)
        if rate > 0:
            # Open loop at the target rate for about 5 s: the latency a client sees when the
            # center takes `rate` submissions per second (the closed loop above only says how
            # fast the server goes when 32 clients each wait for their answer).
            paced = subs[: max(10, min(submissions, int(rate * 5)))]
            result["submit_paced"] = _phase(server, dbname, port, paced, clients, rate) | {"offered_per_s": rate}
        if sync_server is not None:
            # The same submissions through the sync path (no async pool), right after, for the ratio.
            asyncio.run(_load(sync_port, warm, clients))
            result["submit_sync"] = _phase(sync_server, dbname, sync_port, subs, clients)
            if rate > 0:
                result["submit_sync_paced"] = _phase(sync_server, dbname, sync_port, paced, clients, rate) | {
                    "offered_per_s": rate}
            result["submit_vs_sync"] = round(result["submit"]["per_s"] / result["submit_sync"]["per_s"], 2)
        _bulk_jobs(url, stored)
        submitted = sum(result[k]["requests"] for k in ("submit", "submit_paced", "submit_sync", "submit_sync_paced")
                        if k in result)
        result["stored_jobs"] = stored + submitted
        lists = [_request("GET", "/v1/jobs?limit=50" + ("&status=PENDING" if i % 2 else ""), tokens.admin)
                 for i in range(max(200, submissions // 10))]
        result["list"] = _phase(server, dbname, port, lists, min(clients, 8))
        result["client_cpu_s"] = round(time.process_time() - cpu0, 2)
        result["submit_vs_healthz"] = round(result["submit"]["per_s"] / result["healthz"]["per_s"], 2)
        result["targets"] = {"submit_per_s": 500, "submit_p99_ms": 50}
        return result
    finally:
        for proc in (server, sync_server):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _server(url: str, data_dir: Path, port: int, workers: int, submit_pool_size: int | None = None) -> subprocess.Popen[bytes]:
    """The real API under uvicorn (access log off, rate limit out of the way); with
    `submit_pool_size=0`, without its async submit path."""
    env = dict(os.environ, SUANLI_DATABASE_URL=url, SUANLI_DATA_DIR=str(data_dir), SUANLI_RATE_LIMIT_PER_S="1000000",
               SUANLI_RATE_LIMIT_BURST="1000000")
    if submit_pool_size is not None:
        env["SUANLI_SUBMIT_POOL_SIZE"] = str(submit_pool_size)
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


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

    @bench_app.command("api")
    def bench_api_command(
        server_workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 2,
        clients: Annotated[int, typer.Option(help="Concurrent keep-alive connections")] = 32,
        submissions: Annotated[int, typer.Option(help="Jobs submitted over HTTP")] = 5000,
        stored: Annotated[int, typer.Option(help="Jobs stored before the list phase")] = 100_000,
        database_url: Annotated[str | None, typer.Option(
            help="Use this PostgreSQL database (kept) instead of a throwaway one on 127.0.0.1:5432")] = None,
        rate: Annotated[float, typer.Option(help="Submissions per second offered in the paced (open-loop) phase; 0: none")] = 500.0,
        compare_sync: Annotated[bool, typer.Option(
            "--compare-sync", help="Also submit through a second server without the async submit path")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Job submissions per second and p50/p99 over HTTP on PostgreSQL, and list latency
        with many jobs stored; /healthz in the same run is the baseline."""
        report(lambda: bench_api(server_workers, clients, submissions, stored, database_url, rate, compare_sync), as_json, _lines)


def _lines(result: dict[str, Any]) -> Iterable[str]:
    for phase in ("healthz", "submit", "submit_paced", "submit_sync", "submit_sync_paced", "list"):
        if phase not in result:
            continue
        p = result[phase]
        yield (f"{phase:<12} {p['requests']:>7} requests  {p['per_s']:>8} /s  p50 {p['ms']['p50']} ms  "
               f"p99 {p['ms']['p99']} ms  cpu ms/request: server {p['server_cpu_ms']} db {p['db_cpu_ms']}  errors {p['errors']}")
    ratios = f"submit vs healthz {result['submit_vs_healthz']}" + (
        f"  submit vs sync path {result['submit_vs_sync']}" if "submit_vs_sync" in result else "")
    yield f"{ratios}  client cpu {result['client_cpu_s']} s"
