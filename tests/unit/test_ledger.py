"""Exact job cost and balanced ledger transactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota.ledger import balance_of, balanced, charge_txn, cost_fen, duration_ms, topup_txn
from quota.types import CENTER_REVENUE, org_cash


def reference_cost(devices: int, ms: int, price: int) -> int:
    """Independent Decimal computation of the documented rule."""
    exact = Decimal(devices) * Decimal(ms) * Decimal(price) / Decimal(3_600_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize(
    ("devices", "ms", "price", "expected"),
    [
        (1, 3_600_000, 1200, 1200),  # one device-hour at ¥12
        (8, 1_800_000, 1200, 4800),  # 8 devices for half an hour
        (1, 1_500, 1200, 1),  # 0.5 fen rounds up
        (1, 1_499, 1200, 0),  # 0.4997 fen rounds down
        (3, 0, 999, 0),
    ],
)
def test_cost_table(devices: int, ms: int, price: int, expected: int) -> None:
    """Invariant: cost = devices × ms × price / 3.6e6, rounded half-up to whole fen."""
    assert cost_fen(devices, ms, price) == expected


@given(st.integers(0, 512), st.integers(0, 10**11), st.integers(0, 10**7))
def test_cost_matches_decimal_reference(devices: int, ms: int, price: int) -> None:
    """Invariant: the integer formula equals exact Decimal arithmetic with ROUND_HALF_UP."""
    assert cost_fen(devices, ms, price) == reference_cost(devices, ms, price)


def test_cost_rejects_negative_inputs() -> None:
    """Invariant: negative quantities are refused, never silently billed."""
    with pytest.raises(ValueError):
        cost_fen(-1, 10, 10)


def test_duration_is_whole_milliseconds_and_never_negative() -> None:
    """Invariant: sub-millisecond remainders are dropped; end before start counts 0."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert duration_ms(t, t + timedelta(seconds=2, microseconds=999)) == 2000
    assert duration_ms(t + timedelta(seconds=1), t) == 0


@given(st.integers(1, 10**6), st.integers(0, 10**9), st.integers(0, 10**9))
def test_charges_and_topups_balance_and_fold(org: int, topup: int, charge: int) -> None:
    """Invariant: every transaction sums to zero and an account's balance is the fold of its entries."""
    txns = []
    if topup:
        txns.append(topup_txn(org, topup, "k", ""))
    txns.append(charge_txn(org, 5, charge, ""))
    assert all(balanced(t) for t in txns)
    entries = [e for t in txns for e in t.entries]
    assert balance_of(org_cash(org), entries) == topup - charge
    assert balance_of(CENTER_REVENUE, entries) == charge
    assert sum(e.amount_fen for e in entries) == 0


def test_topup_must_be_positive() -> None:
    """Invariant: a zero or negative top-up is refused."""
    with pytest.raises(ValueError):
        topup_txn(1, 0, "k", "")
