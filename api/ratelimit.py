"""Per-token rate limit: a token bucket per API token (by its hash), and per client IP for
requests that are not (yet) known to be authenticated.

Rule: each key has a bucket of `burst` requests that refills at `rate_per_s`; a request takes
one; an empty bucket means 429 `rate_limited` with `Retry-After` (whole seconds, at least 1)
until the next request fits.

Keys:
- a request with `Authorization: Bearer T` is charged to `token:<sha256(T)>`;
- a request without a token is charged to `ip:<client address>`;
- a request whose token has not yet been seen to work (no earlier non-401 answer in this
  process) is charged to BOTH its token and its IP. So rotating made-up tokens does not escape
  the per-IP limit, while a working token behind a busy NAT only uses its own bucket. A 401
  forgets the token again (revoked or expired tokens fall back under the IP rule).

Invariants:
- Cheap: no database access, no I/O; one dict lookup and a few float operations under a lock.
  A refused request never reaches the routes, so it cannot touch the database or half-write.
- Thread-safe: one `threading.Lock` guards the buckets and the known-token set.
- Bounded memory: a bucket idle for `burst / rate_per_s` seconds is full again, which is the
  same as having no bucket, so such buckets are swept; only admitted requests create buckets,
  and unknown tokens are admitted only within their IP's budget. The known-token set is an
  LRU of at most `KNOWN_TOKENS_MAX` hashes.
- Exempt paths (`/healthz`, `/readyz`, `/metrics`) are never limited: probes and Prometheus
  must not be throttled into declaring the service dead.

Several replicas: buckets live in each API process, so with N replicas behind a load
balancer a client may get up to N × the configured rate (each replica has its own bucket).
That is acceptable here: the limit protects each replica and the database from one runaway
client, not a billing quota, and N is small. A center that needs one global limit can keep
the buckets in Redis (one `EVAL` of the same refill-and-take arithmetic per request on a key
`rl:<key>` with a TTL of `burst / rate_per_s`) behind the same `take` interface.

Client address: `scope["client"]`. Behind a reverse proxy, run uvicorn with
`--proxy-headers --forwarded-allow-ips=<proxy>` so that is the real client; this module never
reads `X-Forwarded-For` itself (anyone can send one).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
KNOWN_TOKENS_MAX = 65_536

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenBuckets:
    """Token buckets by key. `clock` is injectable (monotonic seconds) for tests."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, at]
        self._known: OrderedDict[str, None] = OrderedDict()
        self._idle_s = self.burst / self.rate  # an idle bucket is full again after this
        self._swept_at: float | None = None  # first take() (the clock may be swapped before)

    def take(self, keys: Iterable[str]) -> tuple[float, str | None]:
        """Take one request from every bucket in `keys`, all or none. Returns (0.0, None) when
        the request is admitted, else (seconds until every bucket holds a whole request, the
        emptiest key). A refusal changes nothing (the refill is a function of the stored
        level and time), so refused requests create no buckets."""
        with self._lock:
            now = self.clock()
            if self._swept_at is None:
                self._swept_at = now
            elif now - self._swept_at >= self._idle_s:
                self._sweep(now)
            levels = sorted((self._level(k, now), k) for k in keys)
            if levels and levels[0][0] < 1.0:
                return (1.0 - levels[0][0]) / self.rate, levels[0][1]
            for level, k in levels:
                self._buckets[k] = [level - 1.0, now]
            return 0.0, None

    def _level(self, key: str, now: float) -> float:
        b = self._buckets.get(key)
        if b is None:
            return self.burst
        return min(self.burst, b[0] + max(0.0, now - b[1]) * self.rate)

    def _sweep(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < self._idle_s}
        self._swept_at = now

    def is_known(self, token_key: str) -> bool:
        with self._lock:
            if token_key in self._known:
                self._known.move_to_end(token_key)
                return True
            return False

    def learn(self, token_key: str, works: bool) -> None:
        """Remember (or forget, after a 401) that a token authenticated."""
        with self._lock:
            if works:
                self._known[token_key] = None
                self._known.move_to_end(token_key)
                while len(self._known) > KNOWN_TOKENS_MAX:
                    self._known.popitem(last=False)
            else:
                self._known.pop(token_key, None)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_s(wait_s: float) -> int:
    """`Retry-After` is whole seconds; round up so a client that obeys it is admitted, and
    never answer 0 (that invites an immediate retry storm)."""
    return max(1, math.ceil(wait_s - 1e-9))


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class RateLimitMiddleware:
    """Pure ASGI middleware (no request body is read). `refuse(retry_after_s, by)` builds the
    429 response (api/app.py makes it problem+json); `by` is "token" or "ip"."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, refuse: Callable[[int, str], Any],
                 exempt: frozenset[str] = EXEMPT_PATHS) -> None:
        self.app = app
        self.buckets = buckets
        self.refuse = refuse
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip_key = f"ip:{client[0] if client else 'unknown'}"
        token = _bearer(scope)
        if token is None:
            keys, token_key = [ip_key], None
        else:
            token_key = "token:" + hashlib.sha256(token.encode()).hexdigest()
            keys = [token_key] if self.buckets.is_known(token_key) else [token_key, ip_key]
        wait, empty = self.buckets.take(keys)
        if empty is not None:
            response = self.refuse(retry_after_s(wait), empty.partition(":")[0])
            await response(scope, receive, send)
            return
        if token_key is None:
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.buckets.learn(token_key, message["status"] != 401)
            await send(message)

        await self.app(scope, receive, watch)
