"""Half-life decayed usage (`quota.usage`): exact values against a 60-digit `decimal`
reference, the half-life and additivity properties, order independence of `Accumulator`,
and refusal of bad input."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota.usage import DEFAULT_HALF_LIFE_S, Accumulator, decay, run_usage

H = DEFAULT_HALF_LIFE_S
EPOCH = 1_764_000_000.0  # late 2025: realistic magnitudes for epoch-second floats


def ref_run_usage(r: float, start: float, end: float, now: float, half_life_s: float = H) -> float:
    """r * H/ln2 * (2^(-(now-end)/H) - 2^(-(now-start)/H)) in 60-digit decimal arithmetic.

    Decimal(float) is exact, so the only error is the final rounding to float; the naive
    difference is harmless at 60 digits."""
    with localcontext() as ctx:
        ctx.prec = 60
        ln2 = Decimal(2).ln()
        R, S, E, N, HH = (Decimal(x) for x in (r, start, end, now, half_life_s))
        return float(R * HH / ln2 * ((-(N - E) * ln2 / HH).exp() - (-(N - S) * ln2 / HH).exp()))


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


# --- decay ------------------------------------------------------------------------------------


def test_decay_halves_every_half_life() -> None:
    """Invariant: decay(v, H) == v/2 and decay(v, 2H) == v/4 exactly; dt = 0 is the identity."""
    assert decay(1000.0, H, H) == 500.0
    assert decay(1000.0, 2 * H, H) == 250.0
    assert decay(1000.0, 3600.0, 3600.0) == 500.0
    assert decay(123.456, 0.0, H) == 123.456
    assert decay(8.0, H) == 4.0  # the default half-life is 7 days


def test_decay_exact_value() -> None:
    """Invariant: decay(v, dt, H) = v * 2^(-dt/H) (one day of a 7-day half-life: 2^(-1/7))."""
    with localcontext() as ctx:
        ctx.prec = 60
        want = float(Decimal(100) * (-(Decimal(1) / 7) * Decimal(2).ln()).exp())
    assert rel(decay(100.0, 86400.0, H), want) < 1e-15


@given(st.floats(0, 1e6), st.floats(0, 1e8), st.floats(0, 1e8), st.floats(1, 1e8))
def test_decay_composes(v: float, a: float, b: float, h: float) -> None:
    """Invariant: decaying over a then over b is decaying over a + b (up to rounding)."""
    once = decay(v, a + b, h)
    twice = decay(decay(v, a, h), b, h)
    assert math.isclose(once, twice, rel_tol=1e-12, abs_tol=1e-300)


@pytest.mark.parametrize("dt", [-1.0, -1e-9, math.nan])
def test_decay_refuses_time_running_backwards(dt: float) -> None:
    """Invariant: a negative (or NaN) interval is an error, never a silent growth."""
    with pytest.raises(ValueError):
        decay(1.0, dt, H)


@pytest.mark.parametrize("h", [0.0, -H, math.nan, math.inf])
def test_decay_refuses_bad_half_life(h: float) -> None:
    """Invariant: the half-life must be a positive finite number of seconds."""
    with pytest.raises(ValueError):
        decay(1.0, 1.0, h)


# --- run_usage --------------------------------------------------------------------------------


def test_one_hour_run_seen_at_its_end() -> None:
    """Invariant: a 1-hour run of 8 units/s seen at its end is the exact integral
    8 * H/ln2 * (1 - 2^(-3600/H)) = 8*3600*(1 - x/2 + x^2/6 - ...), x = 3600 ln2/H: ~0.2%
    below 28800."""
    got = run_usage(8.0, EPOCH, EPOCH + 3600.0, EPOCH + 3600.0, H)
    assert rel(got, ref_run_usage(8.0, EPOCH, EPOCH + 3600.0, EPOCH + 3600.0)) < 1e-14
    small = 1 - got / (8 * 3600)
    x = 3600 * math.log(2) / H
    assert 0.0020 < small < 0.0021
    assert math.isclose(small, x / 2 - x**2 / 6, rel_tol=1e-5)  # next term x^3/24: ~1e-6 rel


@pytest.mark.parametrize(
    ("r", "start", "end", "now", "h"),
    [
        (8.0, EPOCH, EPOCH + 3600.0, EPOCH + 86400.0, H),  # seen a day later
        (2.5, EPOCH, EPOCH + 30 * 86400.0, EPOCH + 30 * 86400.0, H),  # longer than H
        (1.0, 0.0, 1e-6, 1e-6, H),  # a microsecond: the naive formula keeps ~4 digits
        (1.0, EPOCH, EPOCH + 1.0, EPOCH + 1.0, H),  # a second at epoch magnitudes
        (1e4, 0.0, 1.0, 1e9, 3600.0),  # decayed to almost nothing
        (3.0, 100.0, 200.0, 250.0, 60.0),
    ],
)
def test_run_usage_matches_high_precision_reference(r: float, start: float, end: float, now: float, h: float) -> None:
    """Invariant: run_usage equals the exact integral to ~1e-14 relative, for long, tiny and
    long-ago runs alike (no cancellation)."""
    assert rel(run_usage(r, start, end, now, h), ref_run_usage(r, start, end, now, h)) < 1e-13


def test_tiny_run_seen_right_away_is_its_undecayed_units() -> None:
    """Invariant: a run of d seconds seen at its end is r*d*(1 - x/2 + x^2/6 - ...) with
    x = d ln2/H -- a 1-second run is ~ r * 1 s, and a 1-microsecond run is not lost to
    cancellation."""
    x = math.log(2) / H
    assert math.isclose(run_usage(5.0, EPOCH, EPOCH + 1.0, EPOCH + 1.0), 5.0 * (1 - x / 2 + x**2 / 6), rel_tol=1e-14)
    assert math.isclose(run_usage(5.0, 0.0, 1e-6, 1e-6), 5e-6, rel_tol=1e-12)


def test_run_usage_halves_after_half_life() -> None:
    """Invariant: the same run seen H later is worth exactly half."""
    at_end = run_usage(8.0, EPOCH, EPOCH + 3600.0, EPOCH + 3600.0, H)
    assert run_usage(8.0, EPOCH, EPOCH + 3600.0, EPOCH + 3600.0 + H, H) == at_end / 2


def test_empty_or_idle_run_is_zero() -> None:
    """Invariant: a zero-length run or a run at 0 units/s has no usage."""
    assert run_usage(8.0, EPOCH, EPOCH, EPOCH + 10) == 0.0
    assert run_usage(0.0, EPOCH, EPOCH + 10, EPOCH + 10) == 0.0


@given(
    st.floats(0, 1e4),
    st.floats(0, 1e8),
    st.floats(0, 1),
    st.floats(0, 1e7),
    st.floats(0, 1e7),
    st.floats(60, 1e8),
)
def test_split_run_sums_to_whole(r: float, start: float, frac: float, length: float, later: float, h: float) -> None:
    """Invariant: a run split at any point m is worth [start, m] + [m, end] = [start, end]."""
    end = start + length
    mid = min(max(start + frac * length, start), end)
    now = end + later
    whole = run_usage(r, start, end, now, h)
    parts = run_usage(r, start, mid, now, h) + run_usage(r, mid, end, now, h)
    assert math.isclose(whole, parts, rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize(
    ("r", "start", "end", "now"),
    [
        (1.0, 10.0, 5.0, 20.0),  # start > end
        (1.0, 0.0, 20.0, 10.0),  # end > now
        (-1.0, 0.0, 1.0, 1.0),
        (math.nan, 0.0, 1.0, 1.0),
        (math.inf, 0.0, 1.0, 1.0),
    ],
)
def test_run_usage_refuses_bad_input(r: float, start: float, end: float, now: float) -> None:
    """Invariant: start > end, end > now and negative (or non-finite) rates are errors."""
    with pytest.raises(ValueError):
        run_usage(r, start, end, now, H)


# --- Accumulator ------------------------------------------------------------------------------


def test_accumulator_decays_and_adds() -> None:
    """Invariant: at(t) = value * 2^(-(t-as_of)/H); a later add moves as_of and adds on top;
    an earlier add is decayed forward to as_of."""
    acc = Accumulator(100.0, EPOCH)
    assert acc.at(EPOCH) == 100.0 and acc.at(EPOCH + H) == 50.0
    later = acc.add(10.0, EPOCH + H)
    assert later == Accumulator(60.0, EPOCH + H)
    earlier = later.add(40.0, EPOCH)  # a job end reported late: worth 20 at EPOCH + H
    assert earlier == Accumulator(80.0, EPOCH + H)
    assert earlier.at(EPOCH + 2 * H) == 40.0


def test_accumulated_run_equals_run_seen_later() -> None:
    """Invariant: recording a run at its end and reading the accumulator at T equals the
    run's usage seen at T."""
    acc = Accumulator(0.0, EPOCH).add(run_usage(8.0, EPOCH, EPOCH + 3600, EPOCH + 3600), EPOCH + 3600)
    t = EPOCH + 3 * 86400.0
    assert math.isclose(acc.at(t), run_usage(8.0, EPOCH, EPOCH + 3600, t), rel_tol=1e-14)


contributions = st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e8)), min_size=1, max_size=30)


@given(contributions, st.randoms(use_true_random=False), st.floats(0, 1e8), st.sampled_from([3600.0, 86400.0, H]))
def test_accumulator_is_order_independent(
    items: list[tuple[float, float]], rnd, extra: float, h: float  # type: ignore[no-untyped-def]
) -> None:
    """Invariant: the same contributions added in any order give the same at(T) for T after
    all of them (1e-9 relative), equal to sum(amount * 2^(-(T - t)/H))."""
    shuffled = list(items)
    rnd.shuffle(shuffled)
    t_end = max(t for _, t in items) + extra

    def total(seq: list[tuple[float, float]]) -> float:
        acc = Accumulator(0.0, 0.0, h)
        for amount, t in seq:
            acc = acc.add(amount, t)
        return acc.at(t_end)

    direct = math.fsum(a * 2.0 ** (-(t_end - t) / h) for a, t in items)
    for got in (total(items), total(shuffled), total(sorted(items, key=lambda x: -x[1]))):
        assert math.isclose(got, direct, rel_tol=1e-9, abs_tol=1e-300)


def test_accumulator_refuses_bad_input() -> None:
    """Invariant: usage never goes negative and an accumulator cannot be read before as_of."""
    acc = Accumulator(1.0, EPOCH)
    with pytest.raises(ValueError):
        acc.at(EPOCH - 1)
    with pytest.raises(ValueError):
        acc.add(-1.0, EPOCH)
    with pytest.raises(ValueError):
        acc.add(math.nan, EPOCH)
    with pytest.raises(ValueError):
        acc.add(1.0, math.nan)
    with pytest.raises(ValueError):
        Accumulator(-1.0, EPOCH)
    with pytest.raises(ValueError):
        Accumulator(1.0, EPOCH, half_life_s=0.0)
