"""What the agent's threads share: the last device sample, the scheduler's allocation and
the heartbeat's record.

Three threads meet here: the sampler writes samples, the heartbeat writes the allocation
and its own success/failure, and scrapes (HTTP server threads) read everything.

Invariants:
- One lock guards everything; readers get copies (tuples, new dicts), never live objects,
  so a scrape sees one consistent moment and never blocks on a driver call.
- The allocation maps device index -> job id for busy devices only; `owners` maps the same
  devices to (org, project) and `idle` names the devices the API calls idle allocations.
- `take_peaks()` returns each device's highest utilization since the previous call (the
  heartbeat's `utilization_pct`, so a busy moment between two beats is never missed) and
  starts over; before any sample it is empty.
- `backend_error` is the last device-backend failure ("" while sampling works); it is what
  the heartbeat reports as the agent's health and what `suanli_agent_backend_up` exports.
- `heartbeat_failures` only grows; `last_heartbeat_at` (epoch seconds) is the time of the
  last heartbeat the API accepted, None before the first.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from agents.devices.base import DeviceSample


class AgentState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: tuple[DeviceSample, ...] = ()
        self._sampled_at: float | None = None
        self._jobs: dict[int, int] = {}
        self._failures = 0
        self._last_ok: float | None = None
        self._backend_error = ""
        self._peaks: dict[int, float] = {}
        self._owners: dict[int, tuple[str, str]] = {}
        self._idle: frozenset[int] = frozenset()

    def set_samples(self, samples: list[DeviceSample] | tuple[DeviceSample, ...], at: float) -> None:
        with self._lock:
            self._samples = tuple(samples)
            self._sampled_at = at
            for x in samples:
                self._peaks[x.index] = max(self._peaks.get(x.index, 0.0), x.utilization_pct)

    def take_peaks(self) -> dict[int, float]:
        with self._lock:
            peaks, self._peaks = self._peaks, {}
            return peaks

    def samples(self) -> tuple[DeviceSample, ...]:
        with self._lock:
            return self._samples

    @property
    def sampled_at(self) -> float | None:
        with self._lock:
            return self._sampled_at

    def set_backend_error(self, message: str) -> None:
        with self._lock:
            self._backend_error = message

    @property
    def backend_error(self) -> str:
        with self._lock:
            return self._backend_error

    def set_jobs(self, jobs: Mapping[int, int | None]) -> None:
        with self._lock:
            self._jobs = {i: j for i, j in jobs.items() if j is not None}

    def jobs(self) -> dict[int, int]:
        with self._lock:
            return dict(self._jobs)

    def set_owners(self, owners: Mapping[int, tuple[str, str]], idle: set[int] | frozenset[int]) -> None:
        with self._lock:
            self._owners = dict(owners)
            self._idle = frozenset(idle)

    def owners(self) -> tuple[dict[int, tuple[str, str]], frozenset[int]]:
        """device -> (org, project) of its job, and the idle-allocation devices."""
        with self._lock:
            return dict(self._owners), self._idle

    def heartbeat_ok(self, at: float) -> None:
        with self._lock:
            self._last_ok = at

    def heartbeat_failed(self) -> None:
        with self._lock:
            self._failures += 1

    @property
    def heartbeat_failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def last_heartbeat_at(self) -> float | None:
        with self._lock:
            return self._last_ok
