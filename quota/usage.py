"""Half-life decayed usage, the input of the fair-share factor (pure: no I/O, no clock).

Units: usage is charged in billing units = device-seconds x the accelerator type's billing
weight. A run that holds devices worth `r` billing units per second accrues `r` units every
second. Times are float epoch seconds (UTC); durations are seconds.

Decay (as Slurm's PriorityDecayHalfLife): a unit charged at time t is worth, at time T >= t,

    w(T - t) = 2^(-(T - t) / H),        H = half-life in seconds (default 7 days = 604800 s)

so usage halves every H seconds and old work fades out of the fair-share factor.

Formulas:
- `decay(v, dt, H) = v * 2^(-dt/H)`, dt >= 0.
- A run of `r` units/s from `start` to `end`, seen at `now` (start <= end <= now), is worth the
  integral of r * w(now - t) over [start, end]:

      r * H/ln2 * (2^(-(now-end)/H) - 2^(-(now-start)/H))
    = r * H/ln2 * 2^(-(now-end)/H) * (1 - 2^(-(end-start)/H))
    = r * 2^(-(now-end)/H) * (H/ln2) * -expm1(-(end-start) * ln2/H)

  The last form is the one computed: it has no subtraction of nearly equal numbers, so a
  1-second run seen right away is ~ r * 1 s to full precision (the first form loses about
  log10(H/d) digits to cancellation: six of sixteen for a 1-second run, twelve for 1 us).

Invariants (tested in tests/unit/test_usage.py):
- decay is multiplicative: decay(decay(v, a), b) == decay(v, a + b) up to rounding, and
  decay(v, H) == v / 2 exactly.
- run_usage is additive over a split of the run: [s, m] + [m, e] == [s, e] up to rounding.
- `Accumulator.add` is order independent: recording the same contributions in any order
  gives the same `at(T)` for T >= every contribution time, to ~1e-9 relative (the value is
  sum_i amount_i * 2^(-(T - t_i)/H); only the rounding depends on the order).
- Usage is never negative and time never runs backwards: negative amounts, dt < 0,
  start > end, end > now, and reading an accumulator before its `as_of` raise ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0  # 604800 s, Slurm's default PriorityDecayHalfLife

_LN2 = math.log(2.0)


def _check_half_life(half_life_s: float) -> None:
    # `not (x > 0)` also rejects NaN. An infinite half-life ("never decay") is refused because
    # the run formula's H/ln2 * (1 - 2^(-d/H)) becomes inf * 0; no decay is a config error here.
    if not (half_life_s > 0.0) or math.isinf(half_life_s):
        raise ValueError(f"half-life must be a positive finite number of seconds, got {half_life_s!r}")


def decay(value: float, dt_s: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
    """`value` decayed over `dt_s` seconds: value * 2^(-dt/H).

    dt = 0 returns `value` unchanged; dt < 0 (time running backwards) and H <= 0 raise
    ValueError.
    """
    _check_half_life(half_life_s)
    if not (dt_s >= 0.0):  # also rejects NaN
        raise ValueError(f"decay interval must be >= 0 seconds (time never runs backwards), got {dt_s!r}")
    if dt_s == 0.0:
        return value
    # 2.0 ** x is exact for integer x, so decay(v, H) == v / 2 and decay(v, 2H) == v / 4.
    return value * 2.0 ** (-dt_s / half_life_s)


def run_usage(
    units_per_s: float,
    start: float,
    end: float,
    now: float,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> float:
    """Decayed usage, seen at `now`, of a run consuming `units_per_s` from `start` to `end`.

    Exact integral r * H/ln2 * (2^(-(now-end)/H) - 2^(-(now-start)/H)), computed as
    r * 2^(-(now-end)/H) * (H/ln2) * -expm1(-(end-start) ln2/H) to avoid cancellation.
    Requires start <= end <= now and units_per_s >= 0 (ValueError otherwise).
    """
    _check_half_life(half_life_s)
    if not (units_per_s >= 0.0) or math.isinf(units_per_s):
        raise ValueError(f"units per second must be finite and >= 0, got {units_per_s!r}")
    if not (start <= end):
        raise ValueError(f"run start {start!r} is after its end {end!r}")
    if not (end <= now):
        raise ValueError(f"run end {end!r} is after the time it is seen at ({now!r})")
    duration = end - start
    if duration == 0.0 or units_per_s == 0.0:
        return 0.0
    # (H/ln2) * (1 - 2^(-d/H)) -> d as d/H -> 0: the undecayed units of the run.
    decayed_seconds = -math.expm1(-duration * _LN2 / half_life_s) * (half_life_s / _LN2)
    return decay(units_per_s * decayed_seconds, now - end, half_life_s)


@dataclass(frozen=True)
class Accumulator:
    """A decayed usage total: `value` billing units as of time `as_of`.

    Immutable: `add` returns a new accumulator. Contributions may be recorded in any order
    (job ends arrive late and out of order); see the module invariants.
    """

    value: float
    as_of: float
    half_life_s: float = DEFAULT_HALF_LIFE_S

    def __post_init__(self) -> None:
        _check_half_life(self.half_life_s)
        if not (self.value >= 0.0) or math.isinf(self.value):
            raise ValueError(f"accumulated usage must be finite and >= 0, got {self.value!r}")
        if not math.isfinite(self.as_of):
            raise ValueError(f"as_of must be a finite time, got {self.as_of!r}")

    def at(self, t: float) -> float:
        """The total decayed to time t >= as_of (earlier raises ValueError: the decay cannot
        be undone without knowing when each contribution was made)."""
        if not (t >= self.as_of):
            raise ValueError(f"cannot read usage at {t!r}, before the accumulator's as_of {self.as_of!r}")
        return decay(self.value, t - self.as_of, self.half_life_s)

    def add(self, amount: float, at: float) -> Accumulator:
        """Add `amount` units valid at time `at`, before or after `as_of`.

        at >= as_of: the total moves to `at` (decayed there, then + amount).
        at <  as_of: the amount is decayed forward to `as_of` and added there; `as_of`
        never moves backwards, so the result can still be read at any t >= as_of.
        """
        if not (amount >= 0.0) or math.isinf(amount):
            raise ValueError(f"usage amount must be finite and >= 0, got {amount!r}")
        if not math.isfinite(at):
            raise ValueError(f"contribution time must be finite, got {at!r}")
        if at >= self.as_of:
            return Accumulator(self.at(at) + amount, at, self.half_life_s)
        return Accumulator(self.value + decay(amount, self.as_of - at, self.half_life_s), self.as_of, self.half_life_s)
