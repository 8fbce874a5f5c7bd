"""Domain dataclasses of billing, and the names of ledger accounts.

Invariants: amounts are integer fen (1 yuan = 100 fen), never float; rates are
`decimal.Decimal` in [0, 1]; a `LedgerTxn`'s entries sum to zero (checked by
`quota.ledger.balanced`).

Account names (stable: they are stored in the ledger, so never rename one):

    org:<org_id>:cash           the org's prepaid account (may go down to −credit limit)
    org:<org_id>:hold           cash set aside for the org's running jobs (never < 0)
    voucher:<voucher_id>        what a voucher can still pay (never < 0)
    voucher:<voucher_id>:hold   voucher money set aside for running jobs (never < 0)
    program:<program_id>:budget a program's money not yet granted as vouchers (never < 0)
    center:revenue              what the center earned (charges in, refunds out)
    center:topups               money paid in from outside by orgs (bank transfers, …)
    center:subsidy              money paid in by the funding government for its programs

The two `center:topups` and `center:subsidy` accounts are external sources: their balances
are negative, and minus the balance is what came in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

CENTER_REVENUE = "center:revenue"
CENTER_TOPUPS = "center:topups"  # money that came in from outside (bank transfer, …)
CENTER_SUBSIDY = "center:subsidy"  # money the funding government put into its programs

# Kinds returned by `parse_account`.
ORG_CASH = "org_cash"
ORG_HOLD = "org_hold"
VOUCHER = "voucher"
VOUCHER_HOLD = "voucher_hold"
PROGRAM_BUDGET = "program_budget"
CENTER = "center"

_CENTER_ACCOUNTS = frozenset({CENTER_REVENUE, CENTER_TOPUPS, CENTER_SUBSIDY})
_PATTERNS = (
    (re.compile(r"org:(\d+):cash"), ORG_CASH),
    (re.compile(r"org:(\d+):hold"), ORG_HOLD),
    (re.compile(r"voucher:(\d+)"), VOUCHER),
    (re.compile(r"voucher:(\d+):hold"), VOUCHER_HOLD),
    (re.compile(r"program:(\d+):budget"), PROGRAM_BUDGET),
)


def org_cash(org_id: int) -> str:
    """The org's prepaid account."""
    return f"org:{org_id}:cash"


def org_hold(org_id: int) -> str:
    """Cash held for the org's running jobs."""
    return f"org:{org_id}:hold"


def voucher_account(voucher_id: int) -> str:
    """What the voucher can still pay."""
    return f"voucher:{voucher_id}"


def voucher_hold(voucher_id: int) -> str:
    """The voucher's money held for running jobs."""
    return f"voucher:{voucher_id}:hold"


def program_budget(program_id: int) -> str:
    """A program's budget not yet granted."""
    return f"program:{program_id}:budget"


def parse_account(name: str) -> tuple[str, int | None]:
    """(kind, id) of an account name written by the functions above; ValueError otherwise.

    Only the exact spelling those functions produce is accepted ("org:01:cash" is not), so a
    balance can never be split over two spellings of one account."""
    if name in _CENTER_ACCOUNTS:
        return CENTER, None
    for pattern, kind in _PATTERNS:
        m = pattern.fullmatch(name)
        if m and str(int(m.group(1))) == m.group(1):
            return kind, int(m.group(1))
    raise ValueError(f"unknown ledger account {name!r}")


def check_fen(name: str, value: int, *, positive: bool = False) -> int:
    """`value` as fen: an int (never a float or bool), ≥ 0 (> 0 when `positive`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be integer fen, got {type(value).__name__}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, got {value}")
    return value


def check_rate(rate: Decimal) -> Decimal:
    """`rate` as a subsidy rate: a finite Decimal in [0, 1] (floats are refused: 0.3 is not 3/10)."""
    if not isinstance(rate, Decimal):
        raise TypeError(f"a rate must be a Decimal, got {type(rate).__name__}")
    if not rate.is_finite() or rate < 0 or rate > 1:
        raise ValueError(f"a rate must be in [0, 1], got {rate}")
    return rate


@dataclass(frozen=True)
class Price:
    accelerator_type: str
    fen_per_device_hour: int
    effective_from: datetime


@dataclass(frozen=True)
class Program:
    """A funding program (e.g. "2026 算力券 第一批"): vouchers granted from it pay `rate` of
    the cost of eligible work. Empty `org_kinds` / `accelerator_types` mean "all". A program's
    rate is fixed once vouchers are granted (a new rate is a new program): holds and meters of
    running jobs rely on it."""

    id: int
    name: str
    budget_fen: int
    rate: Decimal
    cap_per_org_year_fen: int | None
    org_kinds: frozenset[str]
    accelerator_types: frozenset[str]
    valid_from: datetime
    valid_until: datetime

    def __post_init__(self) -> None:
        check_fen("budget_fen", self.budget_fen)
        check_rate(self.rate)
        if self.cap_per_org_year_fen is not None:
            check_fen("cap_per_org_year_fen", self.cap_per_org_year_fen)
        if not self.valid_from < self.valid_until:
            raise ValueError("a program's validity window must not be empty")


@dataclass(frozen=True)
class Voucher:
    """A grant of `face_fen` from a program to an org, usable in [valid_from, expires_at) and
    not from `revoked_at` on."""

    id: int
    program_id: int
    org_id: int
    face_fen: int
    valid_from: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        check_fen("face_fen", self.face_fen, positive=True)
        if not self.valid_from < self.expires_at:
            raise ValueError("a voucher's validity window must not be empty")


@dataclass(frozen=True)
class VoucherBalance:
    """What a voucher can still pay (`remaining_fen`, the balance of `voucher:<id>`), with its
    program's rate and eligible accelerator types (empty = all)."""

    voucher: Voucher
    rate: Decimal
    types: frozenset[str]
    remaining_fen: int

    def __post_init__(self) -> None:
        check_rate(self.rate)
        check_fen("remaining_fen", self.remaining_fen)


@dataclass(frozen=True)
class Split:
    """Who pays a cost: `voucher_parts` is (voucher id, fen) in the order the vouchers were
    used, each positive, each voucher once; `cash_fen` is the org account's part.

    `rate` is the rate of the overall (non-stacking) cap the split was made under: the highest
    rate among the eligible vouchers' programs, 0 when none was eligible. Metering a hold
    needs it (see `quota.vouchers.meter_split`); other users may ignore it."""

    voucher_parts: tuple[tuple[int, int], ...]
    cash_fen: int
    rate: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        check_fen("cash_fen", self.cash_fen)
        check_rate(self.rate)
        seen: set[int] = set()
        for voucher_id, fen in self.voucher_parts:
            check_fen(f"voucher {voucher_id}'s part", fen, positive=True)
            if voucher_id in seen:
                raise ValueError(f"voucher {voucher_id} appears twice in a split")
            seen.add(voucher_id)

    @property
    def voucher_fen(self) -> int:
        return sum(fen for _, fen in self.voucher_parts)

    @property
    def total_fen(self) -> int:
        return self.voucher_fen + self.cash_fen

    def part(self, voucher_id: int) -> int:
        """This voucher's part (0 if it pays nothing)."""
        return dict(self.voucher_parts).get(voucher_id, 0)


@dataclass(frozen=True)
class LedgerEntry:
    account: str
    amount_fen: int


@dataclass(frozen=True)
class LedgerTxn:
    key: str  # idempotency key: the same key is applied at most once
    kind: str
    org_id: int | None
    job_id: int | None
    memo: str
    entries: tuple[LedgerEntry, ...]
    created_at: datetime | None = None


@dataclass(frozen=True)
class Balance:
    org_id: int
    org: str
    balance_fen: int  # the account: what is not held for running jobs
    recent: tuple[LedgerTxn, ...]
    held_fen: int = 0  # held for running jobs (settled when they end)
    credit_limit_fen: int = 0
    vouchers: tuple[VoucherView, ...] = ()


@dataclass(frozen=True)
class VoucherView:
    """A voucher as its org sees it."""

    id: int
    program: str
    rate: Decimal
    types: tuple[str, ...]
    face_fen: int
    remaining_fen: int
    held_fen: int
    valid_from: datetime
    expires_at: datetime
    revoked_at: datetime | None
    usable: bool


@dataclass(frozen=True)
class Wallet:
    """What an org can pay new holds with: its account down to minus its credit limit
    (holds are already taken out of the account), and its vouchers' balances."""

    cash_available_fen: int
    vouchers: tuple[VoucherBalance, ...] = ()
