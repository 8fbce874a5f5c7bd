"""An in-memory double-entry book: the reference model the database ledger must match.

Pure: no I/O, no clock. Txns are kept by idempotency key (posting a key again is a no-op that
returns False, even if the txn differs, as `suanli.db.store.ledger.post` does); balances are
folds of the posted entries.

`post(txn)` refuses, with ValueError and nothing posted:
- an unbalanced txn (fewer than two entries, or entries not summing to zero);
- an entry on an account name `quota.types.parse_account` does not know;
- a txn that would take, below zero, a program budget, a voucher, a voucher hold or an org
  hold; or an org's cash below minus its credit limit (`credit_limits`, default 0);
- a txn that touches a hold without naming its job, or that takes any job's share of a hold
  below zero (one job's meter must not eat another job's hold: holds are per-org and
  per-voucher accounts, so the per-job shares are kept here, from `txn.job_id`);
- a txn that moves money between center revenue and an org or voucher account without
  naming its job, or that returns to an account more than the job paid from it (a refund
  beyond the charge).

Floors are checked only for accounts the txn lowers: a txn that raises an account is never
refused for it, even if it stays below its floor. Charges from holds never look at cash: they
move org hold → revenue and voucher hold → revenue, so the org's cash is not touched; the
money was taken from cash (within the credit limit) when the hold was placed, and a charge
must not fail because the org spent or its limit shrank since. The release and refund
steps only raise cash.

A credit limit is changed with `set_credit_limit`, which refuses a limit below what the org
already owes (collect first); so "no org cash below −limit" is a property of the state, not
of its history. (Writing `credit_limits` directly skips that check; `invariants()` then
reports the breach.)

`invariants()` recomputes everything from the txns and lists what is violated (empty =
fine): every txn balanced; the folds agree with the running balances; no program budget,
voucher, voucher hold or org hold below zero; no org cash below −its limit; no job's share
of a hold, and no job's net payment from an account, below zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from quota.ledger import balanced
from quota.types import (
    CENTER_REVENUE,
    ORG_CASH,
    ORG_HOLD,
    PROGRAM_BUDGET,
    VOUCHER,
    VOUCHER_HOLD,
    LedgerTxn,
    check_fen,
    org_cash,
    parse_account,
    voucher_account,
)

_NEVER_NEGATIVE = frozenset({PROGRAM_BUDGET, VOUCHER, VOUCHER_HOLD, ORG_HOLD})
_HOLDS = frozenset({ORG_HOLD, VOUCHER_HOLD})
_PAYERS = frozenset({ORG_CASH, ORG_HOLD, VOUCHER, VOUCHER_HOLD})


def _payer(account: str) -> str:
    """Whose money an account holds: a hold is its org's cash or its voucher, set aside."""
    kind, ident = parse_account(account)
    assert ident is not None
    if kind in (ORG_CASH, ORG_HOLD):
        return org_cash(ident)
    return voucher_account(ident)


def _net(txn: LedgerTxn) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in txn.entries:
        out[e.account] = out.get(e.account, 0) + e.amount_fen
    return out


def _job_moves(txn: LedgerTxn) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]:
    """The txn's changes to (job, hold account) shares and to (job, payer) net payments.
    ValueError when such a change has no job to belong to."""
    net = _net(txn)
    kinds = {a: parse_account(a)[0] for a in net}
    held: dict[tuple[int, str], int] = {}
    paid: dict[tuple[int, str], int] = {}
    touches_hold = any(kinds[a] in _HOLDS and fen for a, fen in net.items())
    pays = net.get(CENTER_REVENUE, 0) != 0 and any(kinds[a] in _PAYERS and fen for a, fen in net.items())
    if (touches_hold or pays) and txn.job_id is None:
        raise ValueError(f"txn {txn.key!r} moves held or charged money but names no job")
    if txn.job_id is None:
        return held, paid
    for account, fen in net.items():
        if kinds[account] in _HOLDS and fen:
            held[(txn.job_id, account)] = fen
        if pays and kinds[account] in _PAYERS and fen:
            # Money leaving a payer's account (or its hold) towards revenue is paid by it.
            k = (txn.job_id, _payer(account))
            paid[k] = paid.get(k, 0) - fen
    return held, paid


class Book:
    """Posted txns by key, balances as folds; see the module docstring for the rules."""

    def __init__(self, credit_limits: Mapping[int, int] | None = None) -> None:
        self.credit_limits: dict[int, int] = {}
        self._txns: dict[str, LedgerTxn] = {}
        self._balances: dict[str, int] = {}
        self._held: dict[tuple[int, str], int] = {}
        self._paid: dict[tuple[int, str], int] = {}
        for org_id, fen in (credit_limits or {}).items():
            self.credit_limits[org_id] = check_fen("credit limit", fen)

    # --- reading ---------------------------------------------------------------------------

    def balance(self, account: str) -> int:
        return self._balances.get(account, 0)

    def accounts(self) -> list[str]:
        """Every account that has had an entry, sorted."""
        return sorted(self._balances)

    def txns(self) -> list[LedgerTxn]:
        """Posted txns in posting order."""
        return list(self._txns.values())

    def posted(self, key: str) -> LedgerTxn | None:
        return self._txns.get(key)

    def credit_limit(self, org_id: int) -> int:
        return self.credit_limits.get(org_id, 0)

    def held(self, job_id: int) -> dict[str, int]:
        """The job's share of each hold account (accounts with nothing held left out)."""
        return {a: fen for (j, a), fen in self._held.items() if j == job_id and fen}

    def paid(self, job_id: int) -> dict[str, int]:
        """What the job paid to revenue from each org cash / voucher account, net of refunds."""
        return {a: fen for (j, a), fen in self._paid.items() if j == job_id and fen}

    # --- writing ---------------------------------------------------------------------------

    def set_credit_limit(self, org_id: int, limit_fen: int) -> None:
        """Set an org's credit limit; refused below what the org already owes."""
        check_fen("credit limit", limit_fen)
        owed = -self.balance(org_cash(org_id))
        if limit_fen < owed:
            raise ValueError(f"org {org_id} owes {owed} fen; its credit limit cannot go below that")
        self.credit_limits[org_id] = limit_fen

    def post(self, txn: LedgerTxn) -> bool:
        """Apply `txn` unless its key was posted before; True if applied. ValueError (nothing
        applied) for a txn the rules refuse."""
        if not balanced(txn):
            raise ValueError(f"unbalanced ledger transaction {txn.key!r}")
        if txn.key in self._txns:
            return False
        net = _net(txn)
        for account, fen in net.items():
            kind, ident = parse_account(account)  # ValueError for an unknown account
            if fen >= 0:
                continue
            after = self.balance(account) + fen
            if kind in _NEVER_NEGATIVE and after < 0:
                raise ValueError(f"txn {txn.key!r} would take {account} to {after} fen")
            if kind == ORG_CASH and ident is not None and after < -self.credit_limit(ident):
                raise ValueError(f"txn {txn.key!r} would take {account} to {after} fen, "
                                 f"below its credit limit {self.credit_limit(ident)}")
        held, paid = _job_moves(txn)
        for k, fen in held.items():
            if self._held.get(k, 0) + fen < 0:
                raise ValueError(f"txn {txn.key!r} takes more from {k[1]} than job {k[0]} holds there")
        for k, fen in paid.items():
            if self._paid.get(k, 0) + fen < 0:
                raise ValueError(f"txn {txn.key!r} returns to {k[1]} more than job {k[0]} paid from it")
        self._txns[txn.key] = txn
        for account, fen in net.items():
            self._balances[account] = self.balance(account) + fen
        for k, fen in held.items():
            self._held[k] = self._held.get(k, 0) + fen
        for k, fen in paid.items():
            self._paid[k] = self._paid.get(k, 0) + fen
        return True

    # --- checking --------------------------------------------------------------------------

    def invariants(self) -> list[str]:
        """Violated invariants, recomputed from the txns (empty = fine)."""
        problems: list[str] = []
        folded: dict[str, int] = {}
        held: dict[tuple[int, str], int] = {}
        paid: dict[tuple[int, str], int] = {}
        for key, txn in self._txns.items():
            if key != txn.key:
                problems.append(f"txn stored under {key!r} has key {txn.key!r}")
            if not balanced(txn):
                problems.append(f"txn {txn.key!r} does not sum to zero")
            for e in txn.entries:
                folded[e.account] = folded.get(e.account, 0) + e.amount_fen
            try:
                h, p = _job_moves(txn)
            except ValueError as err:
                problems.append(str(err))
                continue
            _add(held, h.items())
            _add(paid, p.items())
        if folded != self._balances:
            problems.append("running balances differ from the fold of the entries")
        for account, fen in sorted(folded.items()):
            try:
                kind, ident = parse_account(account)
            except ValueError as err:
                problems.append(str(err))
                continue
            if kind in _NEVER_NEGATIVE and fen < 0:
                problems.append(f"{account} is {fen} fen (below zero)")
            if kind == ORG_CASH and ident is not None and fen < -self.credit_limit(ident):
                problems.append(f"{account} is {fen} fen, below minus its credit limit {self.credit_limit(ident)}")
        problems += [f"job {j} holds {fen} fen in {a}" for (j, a), fen in sorted(held.items()) if fen < 0]
        problems += [f"job {j} paid {fen} fen net from {a}" for (j, a), fen in sorted(paid.items()) if fen < 0]
        if {k: f for k, f in held.items() if f} != {k: f for k, f in self._held.items() if f}:
            problems.append("running job holds differ from the fold of the entries")
        if {k: f for k, f in paid.items() if f} != {k: f for k, f in self._paid.items() if f}:
            problems.append("running job payments differ from the fold of the entries")
        return problems


def _add(into: dict[tuple[int, str], int], items: Iterable[tuple[tuple[int, str], int]]) -> None:
    for k, fen in items:
        into[k] = into.get(k, 0) + fen
