"""Center-admin service for subsidy programs and their vouchers: create and list programs,
grant, list and revoke vouchers. The money rules live in `quota.programs`; this module adds
roles, transactions, input checks that need the database (known types, orgs), and the views.

Invariants:
- Only center admins call anything here (`forbidden` otherwise).
- Each call is one transaction and every check runs before the first write, so a refused
  request (a `SuanliError` with a stable code) writes nothing: no program, voucher, ledger
  transaction or audit row. Each change writes exactly one audit row (in `quota.programs`).
- Every amount shown is derived from the ledger, never stored. For each program:
      budget_fen = left_fen + outstanding_fen + held_fen + redeemed_fen
  where left is the balance of its budget account, outstanding the balances of its
  vouchers, held their holds for running jobs, and redeemed what its vouchers paid for jobs
  net of refunds (charges and refunds of voucher money). granted_fen (what grants moved
  from the budget) and returned_fen (what revocations and expiries moved back) explain
  `left = budget − granted + returned`.
- Rates travel as exact decimals: parsed from their text (`"0.3"`; a JSON number is read
  through its shortest text), in (0, 1], at most 4 decimal places; never a binary float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quota import programs as quota_programs
from quota.types import (
    PROGRAM_BUDGET,
    VOUCHER,
    VOUCHER_HOLD,
    Program,
    Voucher,
    parse_account,
    program_budget,
    voucher_account,
    voucher_hold,
)
from suanli.db.engine import Database
from suanli.db.models import ProgramRow, VoucherRow
from suanli.db.store import billing as store
from suanli.db.store import tenancy
from suanli.errors import conflict, forbidden, invalid, not_found
from suanli.identity import Principal, Role
from suanli.jobs import utcnow

ORG_KINDS = ("university", "research-institute", "enterprise", "sme", "startup")
MAX_FEN = 10**15  # ¥10 trillion: far above any program, far below BIGINT
NAME_MAX = 128  # programs.name is VARCHAR(128)

# Ledger transaction kinds, by what they mean for a program's money.
_GRANT = frozenset({"grant"})
_RETURN = frozenset({"revoke", "expire"})
_REDEEM = frozenset({"charge", "refund"})  # voucher money paid for jobs (refunds net it back)


class VoucherStatus(StrEnum):
    """What a voucher is now (first that applies): revoked; expired (its window ended);
    used_up (nothing left and nothing held for running jobs); active (it can pay, or will
    from `valid_from`, or its money is held by running jobs)."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED_UP = "used_up"


@dataclass(frozen=True)
class ProgramMoney:
    """A program's money, folded from the ledger (see the module invariant)."""

    budget_fen: int
    granted_fen: int
    left_fen: int
    outstanding_fen: int
    held_fen: int
    redeemed_fen: int
    returned_fen: int


@dataclass(frozen=True)
class ProgramEntry:
    program: Program
    created_at: datetime
    vouchers: int  # how many vouchers were granted from it
    money: ProgramMoney


@dataclass(frozen=True)
class VoucherEntry:
    voucher: Voucher
    program: str
    org: str
    remaining_fen: int
    held_fen: int
    status: VoucherStatus


@dataclass(frozen=True)
class Revocation:
    voucher: VoucherEntry
    returned_fen: int  # what went back to the program now (held money stays held)


def _admin(who: Principal) -> None:
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"this needs the role {Role.CENTER_ADMIN.value}; you are {who.role.value}")


def _utc(at: datetime) -> datetime:
    """A time without a zone is read as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# ---------------------------------------------------------------------------- input checks


def parse_rate(value: str | int | float | Decimal) -> Decimal:
    """The exact subsidy rate from `"0.3"`, `0.3`, `1` or a Decimal: in (0, 1], at most 4
    decimal places; `bad_rate` otherwise. A float is read through its shortest text, so 0.3
    is 3/10 and not the binary float's 0.2999…"""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise invalid("bad_rate", "the rate is a decimal number like \"0.3\"", "rate")
    try:
        rate = Decimal(value if isinstance(value, Decimal) else str(value).strip())
    except InvalidOperation:
        raise invalid("bad_rate", f"{value!r} is not a decimal number (write the rate like \"0.3\")", "rate") from None
    if not rate.is_finite() or not Decimal(0) < rate <= Decimal(1):
        raise invalid("bad_rate", f"the subsidy rate must be in (0, 1], e.g. 0.3 for 30 %; got {value}", "rate")
    if rate != rate.quantize(quota_programs.RATE_STEP):
        raise invalid("bad_rate", f"the subsidy rate has at most {quota_programs.RATE_PLACES} decimal places; got {value}",
                      "rate")
    return rate.quantize(quota_programs.RATE_STEP).normalize()


def rate_text(rate: Decimal) -> str:
    """'0.3' for 0.3000, '1' for 1.0000 (never exponent notation)."""
    return format(Decimal(rate).normalize(), "f")


def _check_name(name: str) -> None:
    if not name or len(name) > NAME_MAX or name != name.strip() or "/" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise invalid("bad_name", f"a program name is 1–{NAME_MAX} characters, no '/', no control characters, no spaces "
                      "at either end", "name")


def _check_fen(field: str, value: int | None, what: str) -> None:
    if value is not None and not 0 < value <= MAX_FEN:
        raise invalid("bad_amount", f"{what} must be a positive number of fen, at most {MAX_FEN}", field)


def _check_kinds(kinds: Sequence[str]) -> list[str]:
    unknown = sorted(set(kinds) - set(ORG_KINDS))
    if unknown:
        raise invalid("unknown_org_kind", f"unknown org kind(s) {', '.join(unknown)}; known: {', '.join(ORG_KINDS)}",
                      "org_kinds")
    return sorted(set(kinds))


def _check_types(s: Session, types: Sequence[str]) -> list[str]:
    known = tenancy.accelerator_vendors(s)
    unknown = sorted(set(types) - set(known))
    if unknown:
        raise invalid("unknown_accelerator_type", f"unknown accelerator type(s) {', '.join(unknown)}; known: "
                      f"{', '.join(sorted(known)) or 'none'}", "accelerator_types")
    return sorted(set(types))


# ---------------------------------------------------------------------------- views


def _money(s: Session, programs: Sequence[ProgramRow], vouchers: Sequence[VoucherRow]) -> dict[int, ProgramMoney]:
    """Each program's money from its budget account and its vouchers' accounts (and holds),
    split by the kind of the transactions that moved it."""
    program_of = {v.id: v.program_id for v in vouchers}
    accounts = [program_budget(p.id) for p in programs]
    accounts += [a for v in vouchers for a in (voucher_account(v.id), voucher_hold(v.id))]
    sums = {p.id: dict.fromkeys(("granted", "left", "outstanding", "held", "redeemed", "returned"), 0) for p in programs}
    for (account, kind), fen in store.balances_by_kind(s, accounts).items():
        what, ident = parse_account(account)
        assert ident is not None
        if what == PROGRAM_BUDGET:
            sums[ident]["left"] += fen
            continue
        assert what in (VOUCHER, VOUCHER_HOLD), account
        t = sums[program_of[ident]]
        t["outstanding" if what == VOUCHER else "held"] += fen
        if kind in _GRANT:
            t["granted"] += fen
        elif kind in _RETURN:
            t["returned"] -= fen
        elif kind in _REDEEM:
            t["redeemed"] -= fen
    return {p.id: ProgramMoney(budget_fen=p.budget_fen, granted_fen=sums[p.id]["granted"], left_fen=sums[p.id]["left"],
                               outstanding_fen=sums[p.id]["outstanding"], held_fen=sums[p.id]["held"],
                               redeemed_fen=sums[p.id]["redeemed"], returned_fen=sums[p.id]["returned"])
            for p in programs}


def _program_entries(s: Session, programs: Sequence[ProgramRow], vouchers: Sequence[VoucherRow]) -> list[ProgramEntry]:
    money = _money(s, programs, vouchers)
    count: dict[int, int] = {}
    for v in vouchers:
        count[v.program_id] = count.get(v.program_id, 0) + 1
    return [ProgramEntry(store.program_from_row(p), p.created_at, count.get(p.id, 0), money[p.id]) for p in programs]


def voucher_status(v: Voucher, remaining_fen: int, held_fen: int, now: datetime) -> VoucherStatus:
    if v.revoked_at is not None:
        return VoucherStatus.REVOKED
    if now >= v.expires_at:
        return VoucherStatus.EXPIRED
    if remaining_fen == 0 and held_fen == 0:
        return VoucherStatus.USED_UP
    return VoucherStatus.ACTIVE


def _voucher_entries(s: Session, rows: Sequence[VoucherRow], now: datetime) -> list[VoucherEntry]:
    left = store.balances_many(s, [a for v in rows for a in (voucher_account(v.id), voucher_hold(v.id))])
    programs = store.program_rows_by_id(s, [v.program_id for v in rows])
    orgs = store.org_names(s, [v.org_id for v in rows])
    out = []
    for row in rows:
        v = store.voucher_from_row(row)
        remaining, held = left[voucher_account(v.id)], left[voucher_hold(v.id)]
        out.append(VoucherEntry(v, programs[v.program_id].name, orgs[v.org_id], remaining, held,
                                voucher_status(v, remaining, held, now)))
    return out


# ---------------------------------------------------------------------------- programs


def create_program(db: Database, who: Principal, *, name: str, budget_fen: int, rate: str | int | float | Decimal,
                   cap_per_org_year_fen: int | None, org_kinds: Sequence[str], accelerator_types: Sequence[str],
                   valid_from: datetime, valid_until: datetime) -> ProgramEntry:
    """Create a program and fund its budget (center:subsidy → program budget)."""
    _admin(who)
    _check_name(name)
    _check_fen("budget_fen", budget_fen, "the budget")
    exact = parse_rate(rate)
    _check_fen("cap_per_org_year_fen", cap_per_org_year_fen, "the yearly cap per org")
    kinds = _check_kinds(org_kinds)
    now = utcnow()
    try:
        with db.begin() as s:
            types = _check_types(s, accelerator_types)
            row = quota_programs.create_program(
                s, name=name, budget_fen=budget_fen, rate=exact, cap_per_org_year_fen=cap_per_org_year_fen, org_kinds=kinds,
                accelerator_types=types, valid_from=_utc(valid_from), valid_until=_utc(valid_until), actor=who.user, now=now)
            return _program_entries(s, [row], [])[0]
    except IntegrityError as e:  # the same name created concurrently
        raise conflict("program_exists", f"a program named {name!r} exists") from e


def list_programs(db: Database, who: Principal) -> list[ProgramEntry]:
    """Every program (oldest first) with its money."""
    _admin(who)
    with db.begin() as s:
        return _program_entries(s, store.programs(s), store.vouchers_where(s))


def get_program(db: Database, who: Principal, name: str) -> ProgramEntry:
    _admin(who)
    with db.begin() as s:
        row = store.get_program(s, name)
        if row is None:
            raise not_found("program", name)
        return _program_entries(s, [row], store.vouchers_where(s, program_id=row.id))[0]


# ---------------------------------------------------------------------------- vouchers


def grant_voucher(db: Database, who: Principal, *, program: str, org: str, face_fen: int, valid_from: datetime | None,
                  expires_at: datetime) -> VoucherEntry:
    """Grant a voucher (program budget → voucher). `valid_from` defaults to now, or to the
    program's start if it starts later (a voucher cannot start before its program)."""
    _admin(who)
    _check_fen("face_fen", face_fen, "the face value")
    now = utcnow()
    with db.begin() as s:
        org_row = tenancy.get_org(s, org)
        if org_row is None:
            raise not_found("org", org)
        prog = store.get_program(s, program)
        if prog is None:
            raise not_found("program", program)
        start = _utc(valid_from) if valid_from is not None else max(now, prog.valid_from)
        row = quota_programs.grant_voucher(s, program=program, org=org_row, face_fen=face_fen, valid_from=start,
                                           expires_at=_utc(expires_at), actor=who.user, now=now)
        return _voucher_entries(s, [row], now)[0]


def list_vouchers(db: Database, who: Principal, *, org: str | None = None, program: str | None = None,
                  active: bool | None = None) -> list[VoucherEntry]:
    """Vouchers by id, of one org and/or program; `active` True keeps only active ones,
    False only the others."""
    _admin(who)
    now = utcnow()
    with db.begin() as s:
        org_id = program_id = None
        if org is not None:
            org_row = tenancy.get_org(s, org)
            if org_row is None:
                raise not_found("org", org)
            org_id = org_row.id
        if program is not None:
            prog = store.get_program(s, program)
            if prog is None:
                raise not_found("program", program)
            program_id = prog.id
        entries = _voucher_entries(s, store.vouchers_where(s, org_id=org_id, program_id=program_id), now)
    if active is None:
        return entries
    return [e for e in entries if (e.status is VoucherStatus.ACTIVE) == active]


def revoke_voucher(db: Database, who: Principal, voucher_id: int, reason: str = "") -> Revocation:
    """Revoke a voucher: what it has left goes back to its program now; what running jobs
    hold stays held and is settled from the hold (the expiry sweep returns any release)."""
    _admin(who)
    now = utcnow()
    with db.begin() as s:
        returned = quota_programs.revoke_voucher(s, voucher_id, who.user, now, reason=reason)
        row = store.get_voucher(s, voucher_id)
        assert row is not None
        return Revocation(_voucher_entries(s, [row], now)[0], returned)
