"""Shared fixtures: one database per backend and one local Ray cluster per test session.

- `center` is parametrized over SQLite (a file, WAL mode) and the real PostgreSQL server on
  127.0.0.1:5432; the PostgreSQL database is created for this session and dropped after it.
  Tests that need isolation create their own org with `center.new_org()`.
- `ray_center` is a SQLite center whose scheduler loop runs in a background thread against a
  real local Ray cluster (one Ray node per simulated server, `suanli.localray`).
"""

from __future__ import annotations

from contextlib import contextmanager

import time

import socket

import itertools
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx2.*")

from fastapi.testclient import TestClient  # noqa: E402

from api.app import create_app  # noqa: E402
from scheduler.types import Device, NodeReport  # noqa: E402
from suanli import nodes as node_service  # noqa: E402
from suanli.cluster import ClusterSpec, demo_cluster  # noqa: E402
from suanli.db.engine import Database, migrate  # noqa: E402
from suanli.db.store import tenancy  # noqa: E402
from suanli.demo import DemoTokens, seed  # noqa: E402
from suanli.identity import Role, new_token  # noqa: E402
from quota import service as quota  # noqa: E402
from suanli.settings import Settings  # noqa: E402

PG_ADMIN_URL = os.environ.get("SUANLI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped afterwards."""
    import psycopg

    name = f"suanli_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:  # make test starts it; say so if it is not there
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({e}); `make test` starts it")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Member:
    org: str
    user: str
    token: str


@dataclass
class Center:
    settings: Settings
    db: Database
    tokens: DemoTokens
    client: TestClient
    cluster: ClusterSpec
    backend: str
    members: list[Member] = field(default_factory=list)

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.tokens.member}"}

    def new_org(self, prepaid_fen: int = 1_000_000, pool: str = "universities") -> Member:
        """A fresh org with one member, a token and a prepaid balance."""
        now = datetime.now(UTC)
        org_name, user_name, token = unique("org"), unique("user"), new_token()
        with self.db.begin() as s:
            org = tenancy.create_org(s, org_name, pool, "university", now)
            user = tenancy.create_user(s, user_name, Role.MEMBER, org.id, now)
            tenancy.add_token(s, user.id, token, now)
            if prepaid_fen:
                quota.top_up(s, org.id, prepaid_fen, f"topup:test:{org_name}", "test", now)
        m = Member(org_name, user_name, token)
        self.members.append(m)
        return m


def register_nodes(db: Database, cluster: ClusterSpec) -> None:
    """Register the cluster's servers the way their agents do (the heartbeat service)."""
    for s in cluster.servers:
        node_service.heartbeat(
            db,
            NodeReport(
                name=s.name,
                accelerator_type=s.accelerator_type,
                cpus=s.cpus,
                memory_mb=s.memory_mb,
                devices=tuple(Device(i, f"{s.name}-{i}", s.model, s.device_memory_mb) for i in range(s.devices)),
                labels={"rack": s.rack or ""},
            ),
        )


def make_center(url: str, data_dir: Path, backend: str, cluster: ClusterSpec | None = None) -> Center:
    cluster = cluster or demo_cluster()
    # Generous rate limits: whole suites share one token; tests/integration/test_ratelimit.py checks the limit.
    # No token cache: many tests change tokens and users in the database behind the API's back
    # (tests/integration/test_authcache.py checks the cache itself).
    settings = Settings(data_dir=data_dir, database_url=url, default_grace_s=2.0, rate_limit_per_s=1e6, rate_limit_burst=10**6,
                        auth_cache_s=0)
    migrate(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    tokens = seed(db, data_dir, cluster)
    register_nodes(db, cluster)
    client = TestClient(create_app(settings, db), raise_server_exceptions=False)
    return Center(settings, db, tokens, client, cluster, backend)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def center(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    data_dir = tmp_path_factory.mktemp(f"center-{request.param}")
    if request.param == "sqlite":
        url = ""
    else:
        url = request.getfixturevalue("postgres_url")
    c = make_center(url, data_dir, request.param)
    yield c
    c.client.close()
    c.db.dispose()


@contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of its own for one test, dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Center]:
    """A center on a database of its own per test, SQLite and PostgreSQL: for tests whose
    scheduler loops act on every job in the database (the shared `center` has other tests' jobs)."""
    if request.param == "sqlite":
        c = make_center("", tmp_path, "sqlite")
        try:
            yield c
        finally:
            c.client.close()
            c.db.dispose()
        return
    with throwaway_postgres("suanli_test_fresh") as url:
        c = make_center(url, tmp_path, "postgres")
        try:
            yield c
        finally:
            c.client.close()
            c.db.dispose()


# ---------------------------------------------------------------------------- Ray


@pytest.fixture(scope="session")
def local_ray() -> Iterator[object]:
    """One real local Ray cluster for the session: the demo servers as Ray nodes."""
    from suanli.localray import start_local_ray

    cluster = start_local_ray(demo_cluster())
    yield cluster
    import ray

    ray.shutdown()
    cluster.shutdown()


@dataclass
class RayCenter(Center):
    loop: object = None


@pytest.fixture(scope="session")
def ray_center(local_ray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCenter]:  # type: ignore[no-untyped-def]
    """A SQLite center whose scheduler cycles every 0.2 s in a thread, launching on Ray
    through the launcher the `ray_launcher` setting chooses."""
    from dataclasses import replace

    from scheduler.loop import SchedulerLoop
    from scheduler.main import loop_config
    from scheduler.supervisor import make_launcher

    data_dir = tmp_path_factory.mktemp("ray-center")
    base = make_center("", data_dir, "sqlite")
    # The launcher `ray_launcher` chooses by default (SUANLI_RAY_LAUNCHER=actors runs the suites on the other).
    launcher = make_launcher(base.settings.ray_launcher, local_ray.address, base.settings.ray_namespace)  # type: ignore[attr-defined]
    # No agents run here (the servers were registered once), so heartbeats are not awaited.
    loop = SchedulerLoop(base.db, launcher, replace(loop_config(base.settings), starting_timeout_s=60, node_timeout_s=None))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop, 0.2), daemon=True)
    thread.start()
    rc = RayCenter(**vars(base), loop=loop)
    yield rc
    stop.set()
    thread.join(timeout=10)
    launcher.stop_all(grace_s=1.0)
    rc.client.close()
    rc.db.dispose()


# ---------------------------------------------------------------------------- the API on a real port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(center: Center) -> Iterator[str]:
    """The center's API on a real loopback port (uvicorn in a thread): for the CLI and for
    streaming, which need a real server."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(center.settings, center.db), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(timeout=10)


@pytest.fixture(scope="module")
def server(center: Center) -> Iterator[str]:
    """The `center` API over HTTP for CLI tests, on the SQLite center only (the CLI does not
    depend on the database; the API suites run on both)."""
    if center.backend != "sqlite":
        pytest.skip("the CLI is checked once, against the SQLite center")
    with serve(center) as url:
        yield url
