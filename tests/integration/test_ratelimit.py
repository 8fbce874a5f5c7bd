"""Per-token rate limit (api/ratelimit.py) through the real app on a SQLite center.

Each test builds its own app on one shared center's database with small limits and a fake
clock (`app.state.rate_limiter.clock`), so nothing sleeps and the session's `center` apps,
which run with generous limits, are not involved.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from api.app import create_app
from api.ratelimit import TokenBuckets, retry_after_s
from suanli.db.models import JobEventRow, JobRow
from tests.conftest import Center, make_center


# Any signed-in user may read it, and it is cheap: a plain authenticated route.
ROUTE = "/v1/prices"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    c = make_center("", Path(tmp_path_factory.mktemp("ratelimit")), "sqlite")
    yield c
    c.client.close()
    c.db.dispose()


def limited(base: Center, rate: float, burst: int, ip: str = "10.0.0.1") -> tuple[TestClient, FakeClock]:
    settings = base.settings.model_copy(update={"rate_limit_per_s": rate, "rate_limit_burst": burst})
    app = create_app(settings, base.db)
    clock = FakeClock()
    app.state.rate_limiter.clock = clock
    return TestClient(app, raise_server_exceptions=False, client=(ip, 40000)), clock


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_burst_then_429_with_retry_after(base: Center) -> None:
    """Invariants: a token gets exactly `burst` requests at once; the next is 429 problem+json
    `rate_limited` with Retry-After in whole seconds, rounded up (1 request at 0.25/s: 4 s)."""
    client, _ = limited(base, rate=0.25, burst=5)
    for _ in range(5):
        assert client.get(ROUTE, headers=auth(base.tokens.member)).status_code == 200
    r = client.get(ROUTE, headers=auth(base.tokens.member))
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == "4"
    body = r.json()
    assert (body["code"], body["status"], body["title"]) == ("rate_limited", 429, "Too Many Requests")


def test_refill_after_time(base: Center) -> None:
    """Invariants: the bucket refills at `rate_per_s` and never beyond `burst`; Retry-After
    shrinks as time passes and obeying it is enough to be admitted."""
    client, clock = limited(base, rate=0.5, burst=3)
    member = auth(base.tokens.member)
    assert [client.get(ROUTE, headers=member).status_code for _ in range(4)] == [200, 200, 200, 429]
    clock.advance(1.0)  # half a request refilled
    r = client.get(ROUTE, headers=member)
    assert (r.status_code, r.headers["retry-after"]) == (429, "1")
    clock.advance(1.0)  # one whole request
    assert [client.get(ROUTE, headers=member).status_code for _ in range(2)] == [200, 429]
    clock.advance(3600)  # a long pause refills to the burst, not more
    assert [client.get(ROUTE, headers=member).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_each_token_has_its_own_bucket(base: Center) -> None:
    """Invariant: one token's exhausted bucket does not limit another token (same client IP),
    once that token is known to work."""
    client, _ = limited(base, rate=0.1, burst=3)
    for token in (base.tokens.other_member, base.tokens.admin):
        assert client.get(ROUTE, headers=auth(token)).status_code == 200
    while client.get(ROUTE, headers=auth(base.tokens.member)).status_code != 429:
        pass
    assert client.get(ROUTE, headers=auth(base.tokens.other_member)).status_code == 200
    assert client.get(ROUTE, headers=auth(base.tokens.admin)).status_code == 200


def test_unauthenticated_requests_are_limited_per_ip(base: Center) -> None:
    """Invariants: requests without a token share their client IP's bucket (401 until it is
    empty, then 429); another IP has its own; a working token is not limited by its IP's
    bucket, but a token never seen to work is (made-up tokens cannot dodge the IP limit)."""
    settings = base.settings.model_copy(update={"rate_limit_per_s": 0.1, "rate_limit_burst": 3})
    app = create_app(settings, base.db)
    app.state.rate_limiter.clock = FakeClock()
    one = TestClient(app, raise_server_exceptions=False, client=("10.0.0.1", 1))
    two = TestClient(app, raise_server_exceptions=False, client=("10.0.0.2", 1))
    assert one.get(ROUTE, headers=auth(base.tokens.member)).status_code == 200  # known (costs 1 of the IP's 3)
    assert [one.get(ROUTE).status_code for _ in range(3)] == [401, 401, 429]
    assert one.get(ROUTE, headers=auth("sl_made-up")).status_code == 429
    assert one.get(ROUTE, headers=auth(base.tokens.member)).status_code == 200
    assert two.get(ROUTE).status_code == 401
    made_up = [two.get(ROUTE, headers=auth(f"sl_guess-{i}")).status_code for i in range(3)]
    assert made_up == [401, 401, 429]


def test_exempt_routes(base: Center) -> None:
    """Invariant: /healthz, /readyz and /metrics answer even when the caller's bucket is empty."""
    client, _ = limited(base, rate=0.1, burst=1)
    assert client.get(ROUTE).status_code == 401
    assert client.get(ROUTE).status_code == 429
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/readyz").status_code != 429  # 404 until the route exists
    metrics = client.get("/metrics").text
    assert 'suanli_http_rate_limited_total{by="ip"} 1.0' in metrics


def test_refused_requests_never_touch_the_database(base: Center) -> None:
    """Invariants: a 429 runs no SQL at all, and a refused submit writes nothing."""
    client, _ = limited(base, rate=0.1, burst=2)
    member = auth(base.tokens.member)
    assert client.get(ROUTE, headers=member).status_code == 200
    assert client.get(ROUTE, headers=member).status_code == 200
    with base.db.begin() as s:
        before = (s.scalar(select(func.count()).select_from(JobRow)), s.scalar(select(func.count()).select_from(JobEventRow)))
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(base.db.engine, "before_cursor_execute", count)
    try:
        spec = {"name": "x", "resources": {"accelerator": "nvidia-a100-80g"}, "command": "echo hi"}
        assert client.post("/v1/jobs", json=spec, headers=member).status_code == 429
        assert client.get(ROUTE, headers=member).status_code == 429
    finally:
        event.remove(base.db.engine, "before_cursor_execute", count)
    assert statements == []
    with base.db.begin() as s:
        after = (s.scalar(select(func.count()).select_from(JobRow)), s.scalar(select(func.count()).select_from(JobEventRow)))
    assert after == before


def test_a_failing_limiter_answers_a_problem_without_traceback(base: Center) -> None:
    """Invariant: even an error inside the middleware reaches the client as a 500 problem
    with code internal_error and no stack trace."""
    client, _ = limited(base, rate=1, burst=1)

    def broken() -> float:
        raise RuntimeError("clock exploded: secret detail")

    client.app.state.rate_limiter.clock = broken  # type: ignore[attr-defined]
    r = client.get(ROUTE, headers=auth(base.tokens.member))
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert "Traceback" not in r.text and "secret detail" not in r.text


def test_zero_rate_turns_the_limit_off(base: Center) -> None:
    """Invariant: rate_limit_per_s = 0 installs no limiter (e.g. for a benchmark replica)."""
    app = create_app(base.settings.model_copy(update={"rate_limit_per_s": 0, "rate_limit_burst": 1}), base.db)
    assert not hasattr(app.state, "rate_limiter")
    client = TestClient(app, raise_server_exceptions=False)
    assert {client.get(ROUTE).status_code for _ in range(5)} == {401}


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    """Invariant: Retry-After rounds up and is never 0."""
    assert [retry_after_s(w) for w in (0.0001, 0.5, 1.0, 1.2, 9.99)] == [1, 1, 1, 2, 10]


def test_buckets_are_thread_safe() -> None:
    """Invariant: with the clock stopped, 8 threads racing on one key are admitted exactly
    `burst` times in total."""
    buckets = TokenBuckets(rate_per_s=1.0, burst=500, clock=lambda: 5.0)
    admitted = [0] * 8

    def hammer(i: int) -> None:
        for _ in range(200):
            if buckets.take(["token:x"])[1] is None:
                admitted[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 500


def test_idle_buckets_are_swept_and_refusals_create_none() -> None:
    """Invariants: a bucket idle long enough to be full again is dropped (memory stays bounded
    by recent admitted traffic); a refused request creates no bucket."""
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_s=10.0, burst=20, clock=clock)
    for i in range(1000):
        assert buckets.take([f"token:{i}"]) == (0.0, None)
    assert len(buckets) == 1000
    for _ in range(20):
        buckets.take(["ip:a"])
    wait, empty = buckets.take(["ip:a", "token:new"])
    assert empty == "ip:a" and wait == pytest.approx(0.1)
    assert len(buckets) == 1001  # "token:new" was not created
    clock.advance(2.0)  # burst / rate: everything idle is full again
    buckets.take(["token:fresh"])
    assert len(buckets) == 1
