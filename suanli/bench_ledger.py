"""`suanli bench ledger`: job settlements per second on PostgreSQL, and their latency.

What one *settlement* is here — the money path of one job run, as the scheduler and the
reconciler drive it, in two transactions on the real services:
1. hold: `quota.settlement.place_hold` (org row lock, voucher locks, balances, the 30 %
   voucher split, the ledger post) + the job's bill bookkeeping (`set_bill`);
2. settle: reading the job, `settle` (final charge split between the voucher and the
   account, release of the rest of the hold) + `set_bill` + `record_run` (the billing run).

Setup (all in one PostgreSQL database): `orgs` orgs with money, one subsidy program (30 %,
A100 only) granting each org one voucher large enough never to run out, plus one "hot"
org; one pending job per settlement with its accelerator type and price set (1 device,
1 hour limit, 1,200 fen per device-hour, so each hold is 1,200 fen and each final cost,
10–60 minutes of run time, is 200–1,200 fen). Then, in this order, on fresh jobs each:
- `baseline`: 1 worker, `settlements // 4` settlements on random orgs (the same-run
  baseline: shared 2-core machines are noisy, so compare ratios, not absolutes);
- `concurrent`: `workers` threads released together, `settlements` on random orgs;
- `hot_org`: `workers` threads, `settlements // 2` settlements all on ONE org: every hold
  waits for that org's row lock, so this shows lock contention.
Defaults: 16 workers, 64 orgs, 2,000 settlements (3,500 in all, about 2–3 minutes on 2
cores). Every worker has its own sessions (the stock `suanli.db.engine.Database`, i.e. the pool the
API uses: 10 + 20 overflow connections, hence at most 30 workers).

By default a throwaway database `suanli_bench_<random>` is created on 127.0.0.1:5432 (user
postgres; `SUANLI_BENCH_PG` overrides the admin URL) and dropped at the end, even on error.
With `--database-url` the given PostgreSQL database is migrated and used, and kept (the
bench's orgs and program have unique names).

JSON keys (stable):
    database            "throwaway" or "given"
    workers, orgs, settlements     the options
    baseline, concurrent, hot_org  one phase each:
        workers, settlements, wall_s, settlements_per_s,
        settle_ms {p50, p95, p99, max}, hold_ms {p50, p95, p99, max}, refused,
        client_cpu_s (CPU time of this Python process during the phase, all threads: near
        wall_s means the client, one process under the GIL, is the bottleneck, not the database)
    speedup_vs_1_worker     concurrent.settlements_per_s / baseline.settlements_per_s
    hot_org_vs_spread       hot_org.settlements_per_s / concurrent.settlements_per_s
    unbalanced_txns         the bench's ledger transactions whose entries do not sum to 0 (must be 0)
    billing_runs            billing runs written (must equal the settlements of all phases)
Percentiles are nearest-rank over every settlement of the phase; latency is the wall time of
the transaction, from `begin` to the end of `commit`.

Errors: bad options → `BenchError` with code 2 naming the option; PostgreSQL unreachable →
code 6. Invariant: this never writes to a database it was not given or did not create.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import typer

A100 = "nvidia-a100-80g"
PRICE = 1200  # fen per device-hour
MAX_WORKERS = 30  # Database's pool: 10 connections + 20 overflow
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# The same option as `suanli.cli.JsonOpt`, defined here: typer resolves annotations in this
# module's globals, and importing suanli.cli at the top would be circular.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


class BenchError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def report(compute: Callable[[], dict[str, Any]], as_json: bool, lines: Callable[[dict[str, Any]], Iterable[str]]) -> None:
    """How every `suanli bench` command ends: run it, then print the JSON or its summary lines;
    a BenchError is the CLI's clear failure with its exit code, never a traceback."""
    from suanli.cli import fail, out, print_json

    try:
        result = compute()
    except BenchError as e:
        fail(str(e), e.code)
    if as_json:
        print_json(result)
        return
    for line in lines(result):
        out.print(line)


@dataclass(frozen=True)
class Work:
    org_id: int
    job_id: int
    minutes: int  # run time, so the cost (and so the voucher split) varies


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p95/p99 and the max, in milliseconds rounded to 0.01."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    v = sorted(values)

    def rank(pct: int) -> float:  # the ceil(n × pct / 100)-th smallest
        return v[max(0, -(-len(v) * pct // 100) - 1)]

    return {k: round(x * 1000, 2) for k, x in (("p50", rank(50)), ("p95", rank(95)), ("p99", rank(99)), ("max", v[-1]))}


def _check(workers: int, orgs: int, settlements: int, database_url: str | None) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise BenchError(f"--workers must be between 1 and {MAX_WORKERS} (the connection pool's size), got {workers}", 2)
    if orgs < 1:
        raise BenchError(f"--orgs must be at least 1, got {orgs}", 2)
    if settlements < 4:
        raise BenchError(f"--settlements must be at least 4, got {settlements}", 2)
    if database_url is not None and not database_url.startswith("postgresql"):
        raise BenchError("--database-url must be a PostgreSQL URL (postgresql+psycopg://user@host:port/db)", 2)


def _driver_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


def bench_ledger(workers: int = 16, orgs: int = 64, settlements: int = 2000, database_url: str | None = None,
                 seed: int = 1) -> dict[str, Any]:
    """Run the benchmark (module docstring); raises BenchError."""
    _check(workers, orgs, settlements, database_url)
    with bench_database(database_url) as (url, kind):
        return _run(url, kind, workers, orgs, settlements, seed)


@contextmanager
def bench_database(database_url: str | None) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, "given" | "throwaway"): the given PostgreSQL database, or a new
    `suanli_bench_<random>` on 127.0.0.1:5432 (`SUANLI_BENCH_PG` overrides the admin URL),
    dropped on the way out even on error. Unreachable → BenchError code 6."""
    if database_url is not None:
        yield _driver_url(database_url), "given"
        return
    import psycopg

    admin_url = os.environ.get("SUANLI_BENCH_PG", PG_ADMIN_URL)
    name = f"suanli_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        raise BenchError(f"PostgreSQL is not reachable at {admin_url} ({str(e).strip()}); start it (`make services`) "
                         "or pass --database-url", 6) from None
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield _driver_url(f"{base}/{name}"), "throwaway"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(url: str, kind: str, workers: int, orgs: int, settlements: int, seed: int) -> dict[str, Any]:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from suanli.db.engine import Database, migrate

    try:
        probe = create_engine(url, connect_args={"connect_timeout": 5})
        with probe.connect():
            pass
        probe.dispose()
    except OperationalError as e:
        raise BenchError(f"PostgreSQL is not reachable at {url.split('@')[-1]} ({str(e.orig).strip()})", 6) from None
    migrate(url)
    db = Database(url)
    try:
        rng = random.Random(seed)
        sizes = {"baseline": settlements // 4, "concurrent": settlements, "hot_org": settlements // 2}
        org_ids, hot_id, now = _seed(db, orgs, sizes)
        jobs = _jobs(db, org_ids, hot_id, sizes, rng, now)
        phases = {
            "baseline": _phase(db, 1, jobs["baseline"], now),
            "concurrent": _phase(db, workers, jobs["concurrent"], now),
            "hot_org": _phase(db, workers, jobs["hot_org"], now),
        }
        unbalanced, runs = _verify(db, org_ids + [hot_id])
    finally:
        db.dispose()
    return {
        "database": kind, "workers": workers, "orgs": orgs, "settlements": settlements, **phases,
        "speedup_vs_1_worker": round(phases["concurrent"]["settlements_per_s"] / phases["baseline"]["settlements_per_s"], 2),
        "hot_org_vs_spread": round(phases["hot_org"]["settlements_per_s"] / phases["concurrent"]["settlements_per_s"], 2),
        "unbalanced_txns": unbalanced, "billing_runs": runs,
    }


def _seed(db: Any, orgs: int, sizes: dict[str, int]) -> tuple[list[int], int, datetime]:
    """Orgs with money, one program, one voucher per org (never running out); returns (org
    ids, the hot org's id, the bench's clock)."""
    from quota import programs
    from quota import service as accounts
    from scheduler.types import Vendor
    from suanli.db.store import tenancy
    from suanli.identity import Role

    now = datetime.now(UTC).replace(microsecond=0)
    tag = uuid.uuid4().hex[:8]
    total = sum(sizes.values())
    face = 400 * total  # ≥ 30 % of the largest hold (360 fen) for every settlement of every phase
    with db.begin() as s:
        tenancy.ensure_accelerator_type(s, A100, Vendor.NVIDIA)
        program = f"bench-{tag}"
        programs.create_program(s, name=program, budget_fen=face * (orgs + 1), rate=Decimal("0.3"), cap_per_org_year_fen=None,
                                org_kinds=["university"], accelerator_types=[A100], valid_from=now - timedelta(days=1),
                                valid_until=now + timedelta(days=365), actor="bench", now=now)
        ids = []
        for i in range(orgs + 1):
            org = tenancy.create_org(s, f"bench-{tag}-{i}", "bench", "university", now)
            tenancy.create_user(s, f"bench-{tag}-{i}", Role.MEMBER, org.id, now)
            accounts.top_up(s, org.id, 2000 * total, f"topup:bench:{tag}:{i}", "bench", now)
            programs.grant_voucher(s, program=program, org=org, face_fen=face, valid_from=now - timedelta(hours=1),
                                   expires_at=now + timedelta(days=30), actor="bench", now=now)
            ids.append(org.id)
    return ids[:-1], ids[-1], now


def _jobs(db: Any, org_ids: list[int], hot_id: int, sizes: dict[str, int], rng: random.Random,
          now: datetime) -> dict[str, list[Work]]:
    """One pending A100 job per settlement, its type and price already decided."""
    from sqlalchemy import update

    from scheduler.types import JobSubmission, Resources
    from suanli.db.models import JobRow, UserRow
    from suanli.db.store import jobs as job_store
    from suanli.db.store import tenancy

    sub = JobSubmission("bench", "default", Resources((A100,), 1), 3600, 1.0, "true", None, {})
    out: dict[str, list[Work]] = {}
    with db.begin() as s:
        users = {u.org_id: u for u in s.query(UserRow).filter(UserRow.org_id.in_(org_ids + [hot_id]))}
        projects = {o: tenancy.get_project(s, o, "default").id for o in org_ids + [hot_id]}
        for phase, n in sizes.items():
            works = []
            for _ in range(n):
                org = hot_id if phase == "hot_org" else rng.choice(org_ids)
                job = job_store.insert_job(s, org, projects[org], users[org], sub, now)
                works.append(Work(org, job, rng.randint(10, 60)))
            out[phase] = works
        ids = [w.job_id for ws in out.values() for w in ws]
        s.execute(update(JobRow).where(JobRow.id.in_(ids)).values(accelerator_type=A100, price_fen_per_device_hour=PRICE))
    return out


def _settle_one(db: Any, w: Work, now: datetime) -> tuple[float, float] | None:
    """One settlement (module docstring): (hold seconds, settle seconds), None if refused."""
    from quota.settlement import NOTHING, InsufficientFunds, bill_to_json, place_hold, run_cost, settle
    from suanli.db.store import jobs as job_store

    t0 = time.perf_counter()
    try:
        with db.begin() as s:
            hold = place_hold(s, org_id=w.org_id, job_id=w.job_id, run=0, devices=1, device_milli=1000, time_limit_s=3600,
                              price=PRICE, accelerator_type=A100, now=now)
            job_store.set_bill(s, w.job_id, hold=bill_to_json(hold) | {"at": now.isoformat()}, run_charged=None, meter_seq=0)
    except InsufficientFunds:
        return None
    t1 = time.perf_counter()
    ended = now + timedelta(minutes=w.minutes)
    with db.begin() as s:
        job = job_store.get_job(s, w.job_id)
        assert job is not None
        final = settle(s, org_id=w.org_id, job_id=w.job_id, run=0, hold=hold, charged=NOTHING,
                       cost=run_cost(1, 1000, now, ended, PRICE), now=ended)
        job_store.set_bill(s, w.job_id, hold=None, run_charged=None, meter_seq=0)
        job_store.record_run(s, job, now, ended, final, center_fault=False, now=ended)
    return t1 - t0, time.perf_counter() - t1


def _phase(db: Any, workers: int, works: list[Work], now: datetime) -> dict[str, Any]:
    todo: queue.SimpleQueue[Work] = queue.SimpleQueue()
    for w in works:
        todo.put(w)
    holds: list[float] = []
    settles: list[float] = []
    refused = [0]
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1)

    def worker() -> None:
        mine_h, mine_s, mine_r = [], [], 0
        barrier.wait()
        try:
            while True:
                try:
                    w = todo.get_nowait()
                except queue.Empty:
                    break
                got = _settle_one(db, w, now)
                if got is None:
                    mine_r += 1
                else:
                    mine_h.append(got[0])
                    mine_s.append(got[1])
        except BaseException as e:  # noqa: B036 — reported below, after the other workers stop
            errors.append(e)
            while True:  # drain, so the others finish
                try:
                    todo.get_nowait()
                except queue.Empty:
                    break
        with lock:
            holds.extend(mine_h)
            settles.extend(mine_s)
            refused[0] += mine_r

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if errors:
        raise BenchError(f"a worker failed: {type(errors[0]).__name__}: {errors[0]}", 1)
    done = len(settles)
    return {"workers": workers, "settlements": done, "wall_s": round(wall, 3),
            "settlements_per_s": round(done / wall, 1) if wall else 0.0,
            "settle_ms": percentiles(settles), "hold_ms": percentiles(holds), "refused": refused[0],
            "client_cpu_s": round(cpu, 3)}


def _verify(db: Any, org_ids: list[int]) -> tuple[int, int]:
    """(ledger transactions of the bench's orgs that do not sum to zero, billing runs written)."""
    from sqlalchemy import func, select

    from suanli.db.models import BillingRunRow, LedgerEntryRow, LedgerTxnRow

    with db.begin() as s:
        sums = (select(LedgerEntryRow.txn_id).join(LedgerTxnRow, LedgerTxnRow.id == LedgerEntryRow.txn_id)
                .where(LedgerTxnRow.org_id.in_(org_ids)).group_by(LedgerEntryRow.txn_id)
                .having(func.sum(LedgerEntryRow.amount_fen) != 0))
        unbalanced = s.scalar(select(func.count()).select_from(sums.subquery()))
        runs = s.scalar(select(func.count()).select_from(BillingRunRow).where(BillingRunRow.org_id.in_(org_ids)))
    return int(unbalanced or 0), int(runs or 0)


def register(bench_app: typer.Typer) -> None:
    """Add `suanli bench ledger` to the bench app."""

    @bench_app.command("ledger")
    def bench_ledger_command(
        workers: Annotated[int, typer.Option(help="Concurrent workers (threads, each with its own sessions)")] = 16,
        orgs: Annotated[int, typer.Option(help="Orgs the settlements are spread over")] = 64,
        settlements: Annotated[int, typer.Option(help="Settlements of the concurrent phase")] = 2000,
        database_url: Annotated[str | None, typer.Option(
            help="Use this PostgreSQL database (kept) instead of a throwaway one on 127.0.0.1:5432")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Settlements per second on PostgreSQL (hold + settle of a job with a voucher split),
        with N workers, 1 worker (the baseline) and N workers on one hot org."""
        report(lambda: bench_ledger(workers, orgs, settlements, database_url), as_json, _lines)


def _lines(result: dict[str, Any]) -> Iterable[str]:
    for phase in ("baseline", "concurrent", "hot_org"):
        p = result[phase]
        yield (f"{phase:<11} {p['workers']:>3} workers  {p['settlements']:>6} settlements  "
               f"{p['settlements_per_s']:>8} /s  settle p50 {p['settle_ms']['p50']} ms  p99 {p['settle_ms']['p99']} ms")
    yield (f"speedup vs 1 worker {result['speedup_vs_1_worker']}  hot org vs spread {result['hot_org_vs_spread']}  "
           f"unbalanced txns {result['unbalanced_txns']}")
