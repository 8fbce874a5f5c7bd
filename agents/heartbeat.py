"""Registration and heartbeats: `PUT {api}/v1/nodes/{node}/heartbeat`.

Every beat sends the whole server report (the same body registers a new node and refreshes a
known one) and reads back the node as the API sees it, including which job holds which
device; that allocation feeds the `job` label of the exporter and, for simulated devices,
their load.

Invariants:
- The body matches `api.schemas.nodes.HeartbeatIn` field for field (tests validate it with
  that model); `agents` does not import `api/`.
- A beat never raises for network, HTTP or response-format problems: it logs exactly one
  line (with the problem's `code` and `detail` when the API sent RFC 9457 problem+json),
  counts a failure in `AgentState` and schedules the next try after a capped exponential
  backoff (1 s, 2 s, 4 s, ... 30 s). A success resets the backoff and the retry interval
  becomes the normal `interval` again.
- The body carries the device topology (read once, if the backend knows it) and the Ray
  node id the operator gave (`--ray-node-id`), so admins see both with the node.
- Each device reports its health (Unknown, with the backend's error as the reason, while the
  backend cannot be read) and its peak utilization since the previous beat (None when
  unknown), which the API's idle-allocation detection uses.
- The allocation is replaced only by a successful beat: after failures the agent keeps
  showing the last allocation it was told, never a guessed one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

import suanli
from agents.devices.base import Collector, SupportsBusy, SupportsTopology
from agents.state import AgentState

log = logging.getLogger(__name__)


class Backoff:
    """Capped exponential delays: initial, initial*factor, ... up to cap; reset() starts over."""

    def __init__(self, initial: float = 1.0, cap: float = 30.0, factor: float = 2.0) -> None:
        self.initial, self.cap, self.factor = initial, cap, factor
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class HeartbeatClient:
    def __init__(
        self,
        api_url: str,
        token: str,
        node_name: str,
        collector: Collector,
        cpus: int,
        memory_mb: int,
        labels: Mapping[str, str] | None = None,
        http: httpx.Client | None = None,
        *,
        accelerator_type: str | None = None,
        state: AgentState | None = None,
        timeout_s: float = 10.0,
        wall_clock: Callable[[], float] = time.time,
        ray_node_id: str = "",
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.node = node_name
        self.collector = collector
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.labels = dict(labels or {})
        # The operator's name for this kind of device; a simulated collector carries its own.
        self.accelerator_type = accelerator_type or getattr(collector, "accelerator_type", None)
        if not self.accelerator_type:
            raise ValueError("the accelerator type is not known: pass accelerator_type")
        self.state = state or AgentState()
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=timeout_s)
        self.wall_clock = wall_clock
        self.backoff = Backoff()
        self.retry_in: float | None = None  # delay chosen by the last failed beat
        self._failed_in_a_row = 0
        self._registered = False
        self.ray_node_id = ray_node_id
        self._topology: list[list[str]] | None | bool = False  # False: not read yet

    @property
    def url(self) -> str:
        return f"{self.api_url}/v1/nodes/{quote(self.node, safe='')}/heartbeat"

    def body(self) -> dict[str, Any]:
        """The heartbeat document (HeartbeatIn)."""
        samples = self.state.samples() or tuple(self.collector.sample())  # first beat may precede the sampler
        by_index = {s.index: s for s in samples}
        peaks = self.state.take_peaks() or {s.index: s.utilization_pct for s in samples}
        broken = self.state.backend_error  # the devices cannot be read: their health is unknown

        def device(d: Any) -> dict[str, Any]:
            s = by_index.get(d.index)
            health = "Unknown" if broken or s is None else str(s.health)
            reason = broken[:200] if broken else (s.health_reason[:200] if s is not None else "no sample")
            return {"index": d.index, "uuid": d.uuid, "model": d.model, "memory_mb": d.memory_total_mib,
                    "health": health, "health_reason": reason if health != "OK" else "",
                    "utilization_pct": None if broken or d.index not in peaks else round(min(100.0, peaks[d.index]), 3)}

        return {
            "accelerator_type": self.accelerator_type,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "devices": [device(d) for d in self.collector.inventory()],
            "labels": self.labels,
            "agent_version": suanli.__version__,
            "topology": self.topology(),
            "ray_node_id": self.ray_node_id,
        }

    def topology(self) -> list[list[str]] | None:
        """The device link matrix, read once (it changes only with the hardware); None when
        the backend cannot tell or reading it failed (logged once)."""
        if self._topology is False:
            self._topology = None
            if isinstance(self.collector, SupportsTopology):
                try:
                    self._topology = self.collector.topology()
                except Exception as e:  # noqa: BLE001 - topology is informative; never stop beating for it
                    log.warning("cannot read the device topology: %s: %s", type(e).__name__, e)
        return self._topology  # type: ignore[return-value]

    def beat(self) -> bool:
        """One heartbeat. True if the API accepted it; never raises for network/HTTP trouble."""
        try:
            resp = self.http.put(self.url, json=self.body(), headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as e:
            return self._failed(f"cannot reach {self.api_url} ({type(e).__name__}: {e or 'no detail'})")
        if resp.status_code >= 400:
            return self._failed(f"refused by the API: HTTP {resp.status_code} {_problem(resp)}")
        try:
            doc = resp.json()
            jobs = _allocation(doc)
            owners, idle = _owners(doc)
        except (ValueError, KeyError, TypeError) as e:
            return self._failed(f"unreadable answer from the API (HTTP {resp.status_code}: {e})")
        self._apply(jobs)
        self.state.set_owners(owners, idle)
        self.state.heartbeat_ok(self.wall_clock())
        if not self._registered:
            log.info("node %s registered with %s (%s, %d devices)", self.node, self.api_url, self.accelerator_type, len(jobs))
        elif self._failed_in_a_row:
            log.info("heartbeat accepted again after %d failure(s)", self._failed_in_a_row)
        self._registered = True
        self._failed_in_a_row = 0
        self.backoff.reset()
        self.retry_in = None
        return True

    def _apply(self, jobs: dict[int, int | None]) -> None:
        known = {d.index for d in self.collector.inventory()}
        full = {i: jobs.get(i) for i in sorted(known)}  # devices the API did not list are idle
        self.state.set_jobs(full)
        if isinstance(self.collector, SupportsBusy):
            self.collector.set_busy(full)

    def _failed(self, what: str) -> bool:
        self.state.heartbeat_failed()
        self._failed_in_a_row += 1
        self.retry_in = self.backoff.next()
        log.warning("heartbeat for node %s failed: %s; next try in %.0f s", self.node, what, self.retry_in)
        return False

    def run(self, stop: threading.Event, interval: float) -> None:
        """Beat every `interval` seconds (or after the backoff delay) until `stop` is set."""
        while not stop.is_set():
            try:
                ok = self.beat()
            except Exception:  # noqa: BLE001 - a bug in one beat must not end the agent's heartbeats
                log.exception("heartbeat for node %s: unexpected error", self.node)
                ok = self._failed("unexpected error (see above)")
            delay = interval if ok else (self.retry_in or interval)
            if stop.wait(delay):
                return

    def close(self) -> None:
        if self._owns_http:
            self.http.close()


def _problem(resp: httpx.Response) -> str:
    """`code: detail` from an RFC 9457 body, else the start of whatever came back."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200].strip() or resp.reason_phrase
    if isinstance(data, dict) and ("code" in data or "detail" in data):
        return f"{data.get('code', '')}: {data.get('detail', '')}".strip(": ")
    return str(data)[:200]


def _allocation(node: Any) -> dict[int, int | None]:
    """device index -> job id (None if free), from a NodeOut document."""
    return {int(d["index"]): (None if d.get("job_id") is None else int(d["job_id"])) for d in node["devices"]}


def _owners(node: Any) -> tuple[dict[int, tuple[str, str]], set[int]]:
    """device index -> (org, project) of its job, and the idle-allocation devices."""
    owners = {int(d["index"]): (str(d.get("org") or ""), str(d.get("project") or ""))
              for d in node["devices"] if d.get("job_id") is not None}
    return owners, {int(d["index"]) for d in node["devices"] if d.get("idle")}
