"""Which voucher pays which part of which cost. Pure: no I/O, no clock (times are passed in).

Rules of `split(cost, type, vouchers, at)`:

1. Eligible vouchers: not revoked at `at` (`revoked_at is None or at < revoked_at`), valid
   (`valid_from <= at < expires_at`), something left (`remaining_fen > 0`), and the
   accelerator type allowed by the voucher's program (an empty set allows every type).
   Ineligible vouchers pay nothing.
2. Programs do not stack: all vouchers together pay at most `round_half_up(max_rate, cost)`,
   `max_rate` the highest rate among the eligible vouchers' programs; the vouchers of one
   program P together pay at most `round_half_up(rate_P, cost)`.
3. Vouchers are used earliest-expiring first (ties: lower voucher id); each pays
   min(its remaining, its program's cap left, the overall cap left). The org's account pays
   the rest: `cash_fen = cost − voucher_fen`, never negative.
4. Rounding: a rate × an amount is rounded to whole fen, half-up, computed exactly with
   integers (no binary floats, no Decimal context precision): 30 % of 1,235 fen = 370.5 →
   371 fen; 30 % of 1,234 fen = 370.2 → 370 fen.

Holds and metering (why `hold_split` and `meter_split` exist):

- A run's hold is `hold_split(H, …)`: `split(H, …)` plus a margin on the cash part of one fen
  per held program beyond the first. Reason: each program's cap is rounded on its own, so
  with two or more programs the cash part of `split(C)` is not monotone in C: for a smaller
  final cost C < H the org may owe up to (programs − 1) fen more cash than `split(H)` held.
  (Proof sketch: with x ↦ min(rate_P·x, held_P) concave, C − Σ_P min(rate_P·C, held_P) is
  convex, so its maximum over [0, H] is at an end; rounding moves each term by < ½ fen at C
  and ≤ ½ fen at H.) With one program the margin is 0 and the hold is exactly `split(H)`.
- Running jobs are metered against their hold with `meter_split(cost_to_date, hold, charged,
  …)`, which returns the increment to charge now. It fills the held voucher parts in the
  hold's order under the caps of rule 2 applied to the cumulative cost, never takes back
  what an earlier meter charged, and charges the rest to the held cash. Guarantees (tested):
  every increment is ≥ 0 per voucher and for cash; cumulatively the vouchers never pay more
  than the caps of rule 2 for the cost to date, no voucher more than it holds, and the cash
  never more than held; a run metered once (only at its end) gets the subsidy `split` gives
  for C over the vouchers it holds, under the hold's overall rate (`Split.rate`: a max-rate
  voucher that held nothing still sets the cap). A run metered several times may, only when
  it holds vouchers of two or more programs, get up to (programs − 1) fen less subsidy than
  one final split would give (the price of never reversing a charge).
- Total charged for a run is at most its hold's total: the service caps the cost at the hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from quota.types import Split, VoucherBalance, check_fen, check_rate

__all__ = [
    "combine",
    "eligible",
    "hold_split",
    "meter_split",
    "remainder",
    "round_half_up",
    "split",
]


def round_half_up(rate: Decimal, amount: int) -> int:
    """`rate × amount` to whole fen, half-up, exactly: 30 % of 1,235 fen = 370.5 → 371."""
    check_rate(rate)
    check_fen("amount", amount)
    # A finite Decimal is n/d exactly; floor((2·n·amount + d) / 2d) = floor(rate·amount + ½).
    n, d = rate.as_integer_ratio()
    return (2 * n * amount + d) // (2 * d)


def eligible(balance: VoucherBalance, accelerator_type: str, at: datetime) -> bool:
    """Rule 1: may this voucher pay for work on `accelerator_type` at `at`?"""
    v = balance.voucher
    if v.revoked_at is not None and v.revoked_at <= at:
        return False
    if not v.valid_from <= at < v.expires_at:
        return False
    if balance.remaining_fen <= 0:
        return False
    return not balance.types or accelerator_type in balance.types


def _programs(vouchers: Iterable[VoucherBalance]) -> dict[int, Decimal]:
    """Program id → rate, refusing repeated vouchers and programs quoted at two rates (the
    caller mixed data from two reads; silently picking one would misbill)."""
    seen: set[int] = set()
    rates: dict[int, Decimal] = {}
    for b in vouchers:
        if b.voucher.id in seen:
            raise ValueError(f"voucher {b.voucher.id} is listed twice")
        seen.add(b.voucher.id)
        p = b.voucher.program_id
        if rates.setdefault(p, b.rate) != b.rate:
            raise ValueError(f"program {p} is quoted at two rates ({rates[p]} and {b.rate})")
    return rates


def split(cost_fen: int, accelerator_type: str, vouchers: Sequence[VoucherBalance], at: datetime) -> Split:
    """Who pays `cost_fen` for work on `accelerator_type` at `at` (rules 1–4 above). The result
    does not depend on the order of `vouchers`."""
    check_fen("cost_fen", cost_fen)
    _programs(vouchers)
    usable = sorted(
        (b for b in vouchers if eligible(b, accelerator_type, at)),
        key=lambda b: (b.voucher.expires_at, b.voucher.id),
    )
    if not usable:
        return Split((), cost_fen)
    max_rate = max(b.rate for b in usable)
    overall_left = round_half_up(max_rate, cost_fen)
    program_left = {b.voucher.program_id: round_half_up(b.rate, cost_fen) for b in usable}
    parts: list[tuple[int, int]] = []
    for b in usable:
        pay = min(b.remaining_fen, program_left[b.voucher.program_id], overall_left)
        if pay > 0:
            parts.append((b.voucher.id, pay))
            program_left[b.voucher.program_id] -= pay
            overall_left -= pay
    voucher_fen = sum(fen for _, fen in parts)
    return Split(tuple(parts), cost_fen - voucher_fen, max_rate)


def hold_split(cost_fen: int, accelerator_type: str, vouchers: Sequence[VoucherBalance], at: datetime) -> Split:
    """The hold for a run that may cost up to `cost_fen`: `split` plus a cash margin of one fen
    per held program beyond the first (see the module docstring), so that metering the run
    with `meter_split` never needs more cash than held."""
    s = split(cost_fen, accelerator_type, vouchers, at)
    program_of = {b.voucher.id: b.voucher.program_id for b in vouchers}
    programs = {program_of[v] for v, _ in s.voucher_parts}
    return Split(s.voucher_parts, s.cash_fen + max(len(programs) - 1, 0), s.rate)


def remainder(hold: Split, charged: Split) -> Split:
    """What is still held after `charged` (per voucher and cash, in the hold's order); what a
    release gives back at the end. ValueError if `charged` exceeds the hold anywhere."""
    held = dict(hold.voucher_parts)
    for v, fen in charged.voucher_parts:
        if fen > held.get(v, 0):
            raise ValueError(f"voucher {v}: charged {fen} fen, held {held.get(v, 0)}")
    if charged.cash_fen > hold.cash_fen:
        raise ValueError(f"cash: charged {charged.cash_fen} fen, held {hold.cash_fen}")
    parts = tuple((v, fen - charged.part(v)) for v, fen in hold.voucher_parts if fen > charged.part(v))
    return Split(parts, hold.cash_fen - charged.cash_fen, hold.rate)


def combine(a: Split, b: Split) -> Split:
    """Sum of two splits (e.g. what was charged so far plus a new charge): parts in the order
    first used; `rate` is the larger of the two."""
    sums = dict(a.voucher_parts)
    for v, fen in b.voucher_parts:
        sums[v] = sums.get(v, 0) + fen
    return Split(tuple(sums.items()), a.cash_fen + b.cash_fen, max(a.rate, b.rate))


def meter_split(cost_to_date_fen: int, hold: Split, charged: Split, vouchers: Sequence[VoucherBalance]) -> Split:
    """The increment to charge a run now that its cost to date is `cost_to_date_fen`.

    `hold` is the run's hold (from `hold_split`), `charged` the sum of what earlier meters of
    this run charged (from this function; `Split((), 0)` at first), `vouchers` the balances
    the hold was split over (only each voucher's program and rate are read: held money was
    set aside at the start, so later expiry or revocation does not take it back).
    ValueError if the cost to date is below what was charged or above the hold."""
    check_fen("cost_to_date_fen", cost_to_date_fen)
    left = remainder(hold, charged)  # also checks charged ≤ hold
    if cost_to_date_fen < charged.total_fen:
        raise ValueError(f"cost to date {cost_to_date_fen} fen is below what was charged ({charged.total_fen})")
    if cost_to_date_fen > hold.total_fen:
        raise ValueError(f"cost to date {cost_to_date_fen} fen is above the hold ({hold.total_fen}); cap it at the hold")
    rates = _programs(vouchers)
    program_of = {b.voucher.id: b.voucher.program_id for b in vouchers}
    for v, _ in hold.voucher_parts:
        if v not in program_of:
            raise ValueError(f"held voucher {v} is missing from the balances")
        if rates[program_of[v]] > hold.rate:
            raise ValueError(f"voucher {v}'s program rate exceeds the hold's overall rate")
    delta = cost_to_date_fen - charged.total_fen
    # Rule 2 on the cumulative cost; an increment never exceeds the cost increment (so cash
    # is never negative) and a cap already used by earlier meters is never given back.
    overall_left = min(delta, max(0, round_half_up(hold.rate, cost_to_date_fen) - charged.voucher_fen))
    program_left: dict[int, int] = {}
    for v, _ in hold.voucher_parts:
        p = program_of[v]
        if p not in program_left:
            paid = sum(fen for w, fen in charged.voucher_parts if program_of.get(w) == p)
            program_left[p] = max(0, round_half_up(rates[p], cost_to_date_fen) - paid)
    parts: list[tuple[int, int]] = []
    for v, still_held in left.voucher_parts:
        p = program_of[v]
        pay = min(still_held, program_left[p], overall_left)
        if pay > 0:
            parts.append((v, pay))
            program_left[p] -= pay
            overall_left -= pay
    cash = delta - sum(fen for _, fen in parts)
    if cash > left.cash_fen:
        # Unreachable for a hold from `hold_split` metered only by this function (module
        # docstring); reached when the caller passes a hold or history of its own making.
        raise ValueError(f"the charge needs {cash} fen of cash, {left.cash_fen} held")
    return Split(tuple(parts), cash, hold.rate)
