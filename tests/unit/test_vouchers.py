"""The voucher split (`quota.vouchers`): exact tables of the rules and their properties.

Rules under test (module docstring of `quota.vouchers`): eligible vouchers are unrevoked,
valid at the time, non-empty and allowed on the type; programs do not stack (all vouchers
≤ round_half_up(max rate × cost), one program's vouchers ≤ round_half_up(its rate × cost));
earliest-expiring first, ties by lower id; the org's account pays the rest; half-up to fen.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from quota.types import Split, Voucher, VoucherBalance
from quota.vouchers import combine, eligible, hold_split, meter_split, remainder, round_half_up, split

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
H100, ASCEND = "nvidia-h100", "ascend-910b"
R20, R30 = Decimal("0.20"), Decimal("0.30")
BIG = 10**9


def vb(vid: int, remaining: int, *, program: int = 1, rate: Decimal = R30, expires_days: float = 30,
       valid_from: datetime | None = None, revoked_at: datetime | None = None,
       types: frozenset[str] = frozenset()) -> VoucherBalance:
    v = Voucher(vid, program, 7, max(remaining, 1), valid_from or T0 - timedelta(days=1),
                T0 + timedelta(days=expires_days), revoked_at)
    return VoucherBalance(v, rate, types, remaining)


# --- exact tables ----------------------------------------------------------------------------

CASES = {
    "one voucher at 30%": (1000, H100, [vb(1, BIG)], Split(((1, 300),), 700, R30)),
    "30% of 1,235 = 370.5 rounds up to 371": (1235, H100, [vb(1, BIG)], Split(((1, 371),), 864, R30)),
    "30% of 1,234 = 370.2 rounds down to 370": (1234, H100, [vb(1, BIG)], Split(((1, 370),), 864, R30)),
    "30% of 5 = 1.5 rounds up to 2": (5, H100, [vb(1, BIG)], Split(((1, 2),), 3, R30)),
    "one program: earliest-expiring voucher first, cap shared": (
        1000, H100, [vb(1, 100, expires_days=20), vb(2, 120, expires_days=10)], Split(((2, 120), (1, 100)), 780, R30)),
    "one program: earliest voucher alone reaches the cap": (
        1000, H100, [vb(1, 100, expires_days=20), vb(2, 1000, expires_days=10)], Split(((2, 300),), 700, R30)),
    "same expiry: lower id first": (
        1000, H100, [vb(9, 200, expires_days=10), vb(4, 200, expires_days=10)], Split(((4, 200), (9, 100)), 700, R30)),
    "two programs 20% then 30%: at most 30% in all": (
        1000, H100, [vb(1, BIG, program=1, rate=R20, expires_days=10), vb(2, BIG, program=2, rate=R30, expires_days=20)],
        Split(((1, 200), (2, 100)), 700, R30)),
    "two programs 30% first: the 20% one adds nothing": (
        1000, H100, [vb(1, BIG, program=1, rate=R20, expires_days=20), vb(2, BIG, program=2, rate=R30, expires_days=10)],
        Split(((2, 300),), 700, R30)),
    "voucher runs out: the org pays the rest": (1000, H100, [vb(1, 50)], Split(((1, 50),), 950, R30)),
    "empty voucher pays nothing": (1000, H100, [vb(1, 0)], Split((), 1000)),
    "ineligible type pays nothing": (1000, H100, [vb(1, BIG, types=frozenset({ASCEND}))], Split((), 1000)),
    "eligible type pays": (1000, ASCEND, [vb(1, BIG, types=frozenset({ASCEND}))], Split(((1, 300),), 700, R30)),
    "expired (expires_at == at) pays nothing": (1000, H100, [vb(1, BIG, expires_days=0)], Split((), 1000)),
    "not yet valid pays nothing": (1000, H100, [vb(1, BIG, valid_from=T0 + timedelta(seconds=1))], Split((), 1000)),
    "valid from exactly now pays": (1000, H100, [vb(1, BIG, valid_from=T0)], Split(((1, 300),), 700, R30)),
    "revoked pays nothing": (1000, H100, [vb(1, BIG, revoked_at=T0)], Split((), 1000)),
    "revoked later still pays now": (1000, H100, [vb(1, BIG, revoked_at=T0 + timedelta(hours=1))], Split(((1, 300),), 700, R30)),
    "ineligible max-rate program does not raise the cap": (
        1000, H100, [vb(1, BIG, program=1, rate=R20), vb(2, BIG, program=2, rate=R30, types=frozenset({ASCEND}))],
        Split(((1, 200),), 800, R20)),
    "cost 0: nothing": (0, H100, [vb(1, BIG)], Split((), 0, R30)),
    "no vouchers: all cash": (1000, H100, [], Split((), 1000)),
}


@pytest.mark.parametrize("case", CASES)
def test_split_table(case: str) -> None:
    """Invariant: the split follows the documented rules exactly (see each case's name)."""
    cost, accel, vouchers, expected = CASES[case]
    assert split(cost, accel, vouchers, T0) == expected


def test_split_refuses_bad_input() -> None:
    """Invariant: negative or non-integer money and inconsistent program data are refused."""
    with pytest.raises(ValueError):
        split(-1, H100, [vb(1, 10)], T0)
    with pytest.raises(TypeError):
        split(10.0, H100, [vb(1, 10)], T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        split(10, H100, [vb(1, 10), vb(1, 10)], T0)  # the same voucher twice
    with pytest.raises(ValueError):
        split(10, H100, [vb(1, 10, rate=R20), vb(2, 10, rate=R30)], T0)  # one program, two rates
    with pytest.raises(TypeError):
        VoucherBalance(vb(1, 1).voucher, 0.3, frozenset(), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        VoucherBalance(vb(1, 1).voucher, Decimal("1.01"), frozenset(), 1)


@pytest.mark.parametrize(("rate", "amount", "expected"), [
    (R30, 1235, 371), (R30, 1234, 370), (Decimal("0.5"), 1, 1), (Decimal("0.49"), 1, 0),
    (Decimal(1), 999, 999), (Decimal(0), 999, 0), (Decimal("0.3333"), 3, 1),
])
def test_round_half_up_table(rate: Decimal, amount: int, expected: int) -> None:
    """Invariant: rate × amount rounds to whole fen, 0.5 fen up."""
    assert round_half_up(rate, amount) == expected


rates = st.decimals(min_value=0, max_value=1, places=4)


@given(rates, st.integers(0, 10**15))
def test_round_half_up_matches_decimal_reference(rate: Decimal, amount: int) -> None:
    """Invariant: the integer formula equals exact Decimal arithmetic with ROUND_HALF_UP."""
    with localcontext() as ctx:
        ctx.prec = 60
        assert round_half_up(rate, amount) == int((rate * amount).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- properties of split ---------------------------------------------------------------------


@st.composite
def voucher_sets(draw: st.DrawFn, max_remaining: int = 3000) -> list[VoucherBalance]:
    program_rates = draw(st.lists(st.sampled_from([Decimal(0), R20, R30, Decimal("0.5"), Decimal("0.333"), Decimal(1)]),
                                  min_size=1, max_size=3))
    program_types = [draw(st.sampled_from([frozenset(), frozenset({H100}), frozenset({ASCEND})])) for _ in program_rates]
    out = []
    for vid in range(1, draw(st.integers(0, 6)) + 1):
        p = draw(st.integers(0, len(program_rates) - 1))
        start = T0 + timedelta(hours=draw(st.integers(-72, 6)))
        expires = start + timedelta(hours=draw(st.integers(1, 200)))
        revoked = draw(st.none() | st.integers(-24, 24).map(lambda h: T0 + timedelta(hours=h)))
        v = Voucher(vid, p + 1, 7, 1, start, expires, revoked)
        out.append(VoucherBalance(v, program_rates[p], program_types[p], draw(st.integers(0, max_remaining))))
    return out


@settings(max_examples=400, deadline=None)
@given(voucher_sets(), st.integers(0, 20_000), st.sampled_from([H100, ASCEND]), st.randoms(use_true_random=False))
def test_split_properties(vouchers: list[VoucherBalance], cost: int, accel: str, rnd: random.Random) -> None:
    """Invariants: cash + vouchers = cost, cash ≥ 0; only eligible vouchers pay, each at most
    its remaining; all vouchers ≤ round_half_up(max eligible rate × cost) and ≤ the eligible
    remaining; one program's vouchers ≤ round_half_up(its rate × cost); vouchers pay the most
    these caps allow; the result does not depend on the order of the input."""
    s = split(cost, accel, vouchers, T0)
    assert s.cash_fen >= 0 and s.cash_fen + s.voucher_fen == cost
    usable = {b.voucher.id: b for b in vouchers if eligible(b, accel, T0)}
    for v, fen in s.voucher_parts:
        assert v in usable and 0 < fen <= usable[v].remaining_fen
    max_rate = max((b.rate for b in usable.values()), default=Decimal(0))
    assert s.rate == max_rate
    assert s.voucher_fen <= round_half_up(max_rate, cost)
    assert s.voucher_fen <= sum(b.remaining_fen for b in usable.values())
    by_program: dict[int, list[VoucherBalance]] = {}
    for b in usable.values():
        by_program.setdefault(b.voucher.program_id, []).append(b)
    most = 0
    for bs in by_program.values():
        paid = sum(s.part(b.voucher.id) for b in bs)
        assert paid <= round_half_up(bs[0].rate, cost)
        most += min(round_half_up(bs[0].rate, cost), sum(b.remaining_fen for b in bs))
    assert s.voucher_fen == min(round_half_up(max_rate, cost), most)
    shuffled = list(vouchers)
    rnd.shuffle(shuffled)
    assert split(cost, accel, shuffled, T0) == s


# --- holds and metering ----------------------------------------------------------------------


def test_hold_margin_covers_non_monotone_cash() -> None:
    """Invariant: with several programs the cash part of split(C) can exceed that of split(H)
    for C < H (per-program rounding); the hold's margin (one fen per extra program) covers it
    and metering never needs more cash than held."""
    vouchers = [vb(1, 1, program=1, rate=R20, expires_days=1), vb(2, 1, program=2, rate=R20, expires_days=2),
                vb(3, 1, program=3, rate=Decimal(1), expires_days=3)]
    assert split(3, H100, vouchers, T0) == Split(((1, 1), (2, 1), (3, 1)), 0, Decimal(1))
    assert split(2, H100, vouchers, T0).cash_fen == 1  # more cash for a smaller cost
    hold = hold_split(3, H100, vouchers, T0)
    assert hold == Split(((1, 1), (2, 1), (3, 1)), 2, Decimal(1))
    first = meter_split(2, hold, Split((), 0), vouchers)
    assert first == Split(((3, 1),), 1, Decimal(1))
    second = meter_split(3, hold, first, vouchers)
    assert second == Split(((1, 1),), 0, Decimal(1))
    assert remainder(hold, combine(first, second)) == Split(((2, 1),), 1, Decimal(1))


def test_single_program_hold_has_no_margin() -> None:
    """Invariant: with one program the hold is exactly split(H)."""
    vouchers = [vb(1, 100), vb(2, 1000, expires_days=40)]
    assert hold_split(1235, H100, vouchers, T0) == split(1235, H100, vouchers, T0)


def test_meter_refuses_bad_history() -> None:
    """Invariant: a cost below what was charged, above the hold, or a charge beyond the hold
    is refused rather than silently clipped."""
    vouchers = [vb(1, BIG)]
    hold = hold_split(1000, H100, vouchers, T0)
    with pytest.raises(ValueError):
        meter_split(1001, hold, Split((), 0), vouchers)
    with pytest.raises(ValueError):
        meter_split(10, hold, Split(((1, 20),), 0), vouchers)
    with pytest.raises(ValueError):
        meter_split(1000, hold, Split((), 701), vouchers)
    with pytest.raises(ValueError):
        meter_split(1000, hold, Split((), 0), [])  # the held voucher's program is unknown


# Two sizes: large amounts, and a few fen, where per-program rounding matters most. Random
# search rarely hits a case where the hold margin is needed (about 1 in 500 small
# multi-program cases), so the known one is given explicitly.
MARGIN_CASE = [vb(1, 1, program=1, rate=R20, expires_days=1), vb(2, 1, program=2, rate=R20, expires_days=2),
               vb(3, 1, program=3, rate=Decimal(1), expires_days=3)]


@settings(max_examples=300, deadline=None)
@example((MARGIN_CASE, 3), H100, 2, [])
@given(st.one_of(st.tuples(voucher_sets(), st.integers(0, 20_000)), st.tuples(voucher_sets(6), st.integers(0, 40))),
       st.sampled_from([H100, ASCEND]), st.integers(0, 10**6), st.lists(st.integers(0, 10**6), max_size=8))
def test_metering_properties(case: tuple[list[VoucherBalance], int], accel: str, final: int, steps: list[int]) -> None:
    """Invariants of metering a hold at increasing costs to date up to a final cost (≤ the
    hold): increments are never negative; the cumulative charge equals the cost to date,
    never exceeds the hold per voucher or in cash, and obeys the non-stacking caps for the
    cost to date; metered once, a run's vouchers pay min(hold rate cap, Σ programs
    min(program cap, held)); metered many times, at most (held programs − 1) fen less."""
    vouchers, cost = case
    _check_metering(vouchers, cost, accel, final, steps)


def _check_metering(vouchers: list[VoucherBalance], cost: int, accel: str, final: int, steps: list[int]) -> None:
    hold = hold_split(cost, accel, vouchers, T0)
    final %= hold.total_fen + 1
    rates = {b.voucher.id: (b.voucher.program_id, b.rate) for b in vouchers}
    program_rate = {rates[v][0]: rates[v][1] for v, _ in hold.voucher_parts}
    points = sorted({x % (final + 1) for x in steps} | {final})
    charged = Split((), 0)
    for c in points:
        charged = combine(charged, meter_split(c, hold, charged, vouchers))
        assert charged.total_fen == c
        remainder(hold, charged)  # raises if anything exceeds the hold
        assert charged.voucher_fen <= round_half_up(hold.rate, c)
        for p, rate in program_rate.items():
            assert sum(f for v, f in charged.voucher_parts if rates[v][0] == p) <= round_half_up(rate, c)
    once = meter_split(final, hold, Split((), 0), vouchers)
    held_by_program: dict[int, int] = {}
    for v, fen in hold.voucher_parts:
        held_by_program[rates[v][0]] = held_by_program.get(rates[v][0], 0) + fen
    most = sum(min(round_half_up(program_rate[p], final), h) for p, h in held_by_program.items())
    assert once.voucher_fen == min(round_half_up(hold.rate, final), most)
    assert 0 <= once.voucher_fen - charged.voucher_fen <= max(len(program_rate) - 1, 0)
    full = meter_split(hold.total_fen, hold, Split((), 0), vouchers)
    assert full.voucher_parts == hold.voucher_parts and full.cash_fen == hold.cash_fen
