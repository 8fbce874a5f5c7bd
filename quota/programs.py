"""Programs and vouchers (数据库 side): create and fund a program, grant, revoke, expire.

Invariants:
- Every check runs before anything is written, inside the caller's transaction, under row
  locks taken in the global order program → org → vouchers (`store.billing`), so concurrent
  grants can never overdraw a program's budget or an org's yearly cap.
- A program's budget moves center:subsidy → program budget once, at creation; a grant moves
  program budget → voucher; revocation and expiry move what is left back to the program.
- Refusals (`SuanliError`, 4xx with a code): non-positive amounts, rate outside (0, 1] or
  with more than 4 decimal places (the column's scale),
  validity windows that end before they start, a grant beyond the program's budget left or
  the org's yearly cap, an org of a kind or a status the program does not serve, a grant
  outside the program's window or one that would already have expired.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from quota import ledger
from quota.types import voucher_account
from suanli.db.models import OrgRow, ProgramRow, VoucherRow
from suanli.db.store import billing as store
from suanli.errors import conflict, invalid, not_found

RATE_PLACES = 4  # programs.rate is NUMERIC(5, 4)
RATE_STEP = Decimal(1).scaleb(-RATE_PLACES)


def create_program(s: Session, *, name: str, budget_fen: int, rate: Decimal, cap_per_org_year_fen: int | None,
                   org_kinds: list[str], accelerator_types: list[str], valid_from: datetime, valid_until: datetime,
                   actor: str, now: datetime) -> ProgramRow:
    if budget_fen <= 0:
        raise invalid("bad_amount", "the budget must be a positive number of fen", "budget_fen")
    if not rate.is_finite() or not (Decimal(0) < rate <= Decimal(1)):
        raise invalid("bad_rate", "the subsidy rate must be in (0, 1], e.g. 0.3 for 30 %", "rate")
    if rate != rate.quantize(RATE_STEP):  # programs.rate is NUMERIC(5, 4): never store a rounded rate
        raise invalid("bad_rate", f"the subsidy rate has at most {RATE_PLACES} decimal places", "rate")
    if cap_per_org_year_fen is not None and cap_per_org_year_fen <= 0:
        raise invalid("bad_amount", "the yearly cap per org must be positive (or none)", "cap_per_org_year_fen")
    if valid_until <= valid_from:
        raise invalid("bad_window", "valid_until must be after valid_from", "valid_until")
    if store.get_program(s, name) is not None:
        raise conflict("program_exists", f"a program named {name!r} exists")
    row = ProgramRow(name=name, budget_fen=budget_fen, rate=rate, cap_per_org_year_fen=cap_per_org_year_fen,
                     org_kinds=sorted(set(org_kinds)), accelerator_types=sorted(set(accelerator_types)),
                     valid_from=valid_from, valid_until=valid_until, created_at=now)
    s.add(row)
    s.flush()
    ledger_post(s, ledger.fund_program_txn(row.id, budget_fen, f"fund:program:{row.id}"), now)
    store.audit(s, actor, "program.create", f"program:{name}", None, _program_dict(row), now)
    return row


def grant_voucher(s: Session, *, program: str, org: OrgRow, face_fen: int, valid_from: datetime, expires_at: datetime,
                  actor: str, now: datetime) -> VoucherRow:
    if face_fen <= 0:
        raise invalid("bad_amount", "the face value must be a positive number of fen", "face_fen")
    if expires_at <= valid_from:
        raise invalid("bad_window", "expires_at must be after valid_from", "expires_at")
    found = store.get_program(s, program)
    if found is None:
        raise not_found("program", program)
    prog = store.lock_program(s, found.id)  # serializes grants of this program
    assert prog is not None
    store.lock_org(s, org.id)
    if valid_from < prog.valid_from or expires_at > prog.valid_until:
        raise invalid("outside_program_window",
                      f"program {program} runs {prog.valid_from:%Y-%m-%d} – {prog.valid_until:%Y-%m-%d}; the voucher must "
                      "fall inside it", "expires_at")
    if now >= prog.valid_until:
        raise conflict("program_ended", f"program {program} ended on {prog.valid_until:%Y-%m-%d}")
    if expires_at <= now:  # after program_ended, which says more when the program is over
        raise invalid("bad_window", f"expires_at {expires_at:%Y-%m-%d %H:%M} is not in the future", "expires_at")
    if prog.org_kinds and org.kind not in prog.org_kinds:
        raise conflict("org_not_eligible", f"program {program} serves {', '.join(prog.org_kinds)}; org {org.name} is a {org.kind}")
    if org.status != "verified":
        raise conflict("org_not_active", f"org {org.name} is {org.status}, not verified")
    left = store.program_left(s, prog.id)
    if face_fen > left:
        raise conflict("program_budget_exceeded", f"program {program} has {left} fen left; {face_fen} asked")
    if prog.cap_per_org_year_fen is not None:
        start, end = datetime(now.year, 1, 1, tzinfo=UTC), datetime(now.year + 1, 1, 1, tzinfo=UTC)
        granted = store.granted_in_year(s, prog.id, org.id, start, end)
        if granted + face_fen > prog.cap_per_org_year_fen:
            raise conflict("org_cap_exceeded",
                           f"org {org.name} was granted {granted} fen by {program} in {now.year}; the cap is "
                           f"{prog.cap_per_org_year_fen}, so at most {max(0, prog.cap_per_org_year_fen - granted)} more")
    row = VoucherRow(program_id=prog.id, org_id=org.id, face_fen=face_fen, valid_from=valid_from, expires_at=expires_at,
                     created_at=now)
    s.add(row)
    s.flush()
    ledger_post(s, ledger.grant_voucher_txn(prog.id, row.id, org.id, face_fen, f"grant:voucher:{row.id}"), now)
    store.audit(s, actor, "voucher.grant", f"voucher:{row.id}", None,
                {"program": program, "org": org.name, "face_fen": face_fen, "expires_at": expires_at.isoformat()}, now)
    return row


def revoke_voucher(s: Session, voucher_id: int, actor: str, now: datetime, reason: str = "") -> int:
    """Revoke a voucher and return what it had left to its program; returns that amount.
    Money already held for running jobs stays held and is settled from the hold. `reason`
    goes into the audit row."""
    row = store.lock_vouchers(s, [voucher_id])
    if not row:
        raise not_found("voucher", voucher_id)
    v = row[0]
    if v.revoked_at is not None:
        raise conflict("voucher_revoked", f"voucher {voucher_id} was revoked on {v.revoked_at:%Y-%m-%d}")
    left = _return(s, v, "revoke", now)
    v.revoked_at = now
    store.audit(s, actor, "voucher.revoke", f"voucher:{voucher_id}", {"remaining_fen": left},
                {"remaining_fen": 0, "returned_fen": left, "reason": reason}, now)
    return left


def expire_vouchers(s: Session, now: datetime) -> list[tuple[int, int]]:
    """Return to their programs what expired or revoked vouchers hold (idempotent sweep).
    A voucher already returned can get money back later — a hold released or a charge
    refunded after it expired — so those are swept again: each return's key names the
    latest ledger entry on the voucher, so a replay with the same state is a no-op."""
    from sqlalchemy import or_, select

    ended = list(s.scalars(select(VoucherRow.id).where(or_(VoucherRow.expires_at <= now, VoucherRow.revoked_at.is_not(None)))))
    left = store.balances(s, [voucher_account(v) for v in ended])
    due = [v for v in ended if left[voucher_account(v)] > 0 or v in _unreturned(s, ended)]
    out = []
    for v in store.lock_vouchers(s, due):
        kind = "revoke" if v.revoked_at is not None else "expire"
        out.append((v.id, _return(s, v, kind, now)))
    return out


def _unreturned(s: Session, ids: list[int]) -> set[int]:
    from sqlalchemy import select

    if not ids:
        return set()
    return set(s.scalars(select(VoucherRow.id).where(VoucherRow.id.in_(ids), VoucherRow.returned_at.is_(None))))


def _return(s: Session, v: VoucherRow, kind: str, now: datetime) -> int:
    account = voucher_account(v.id)
    left = store.balances(s, [account])[account]
    if left > 0:
        last = store.last_entry_id(s, account)
        ledger_post(s, ledger.return_voucher_txn(v.program_id, v.id, v.org_id, left, f"{kind}:voucher:{v.id}:{last}", kind), now)
    if v.returned_at is None:
        v.returned_at = now
    return left


def ledger_post(s: Session, txn, now: datetime) -> bool:  # type: ignore[no-untyped-def]
    from suanli.db.store import ledger as ledger_store

    return ledger_store.post(s, txn, now)


def _program_dict(p: ProgramRow) -> dict[str, object]:
    return {"name": p.name, "budget_fen": p.budget_fen, "rate": str(p.rate), "cap_per_org_year_fen": p.cap_per_org_year_fen,
            "org_kinds": p.org_kinds, "accelerator_types": p.accelerator_types,
            "valid_from": p.valid_from.isoformat(), "valid_until": p.valid_until.isoformat()}
