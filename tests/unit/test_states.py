"""The job state machine: only table edges are allowed; terminal states are final."""

from __future__ import annotations

import itertools

import pytest

from scheduler.states import TRANSITIONS, allowed, transition
from scheduler.types import ACTIVE, TERMINAL, JobStatus
from suanli.errors import Kind, SuanliError

ALL = list(JobStatus)


@pytest.mark.parametrize(("frm", "to"), sorted(TRANSITIONS))
def test_every_table_edge_is_allowed_and_carries_a_reason(frm: JobStatus, to: JobStatus) -> None:
    """Invariant: each edge of the table is allowed and its transition has a reason."""
    t = transition(7, frm, to, "")
    assert (t.from_status, t.to_status, t.job_id) == (frm, to, 7)
    assert t.reason == TRANSITIONS[(frm, to)]
    assert transition(7, frm, to, "because").reason == "because"


@pytest.mark.parametrize(("frm", "to"), [p for p in itertools.product(ALL, ALL) if p not in TRANSITIONS])
def test_edges_not_in_the_table_are_refused(frm: JobStatus, to: JobStatus) -> None:
    """Invariant: anything not in the table raises a conflict with code illegal_transition."""
    assert not allowed(frm, to)
    with pytest.raises(SuanliError) as e:
        transition(1, frm, to, "x")
    assert e.value.code == "illegal_transition" and e.value.kind is Kind.CONFLICT


def test_terminal_statuses_have_no_way_out() -> None:
    """Invariant: no edge leaves SUCCEEDED, FAILED, CANCELLED or TIMEOUT."""
    assert TERMINAL == {s for s in ALL if s.terminal}
    assert not [e for e in TRANSITIONS if e[0] in TERMINAL]


def reachable(start: JobStatus) -> set[JobStatus]:
    seen, frontier = {start}, [start]
    while frontier:
        s = frontier.pop()
        for a, b in TRANSITIONS:
            if a is s and b not in seen:
                seen.add(b)
                frontier.append(b)
    return seen


def test_every_status_is_reachable_from_pending_and_every_active_status_can_end() -> None:
    """Invariant: no dead statuses: all are reachable from PENDING, and from every
    non-terminal status some terminal status is reachable."""
    assert reachable(JobStatus.PENDING) == set(ALL)
    for s in set(ALL) - TERMINAL:
        assert reachable(s) & TERMINAL, s
    assert ACTIVE <= reachable(JobStatus.PENDING)


def test_held_is_entered_only_from_pending_and_leaves_only_to_pending_or_cancelled() -> None:
    """Invariants: HELD (a hold on a pending job) is neither active nor terminal; the only
    way in is from PENDING, the only ways out are release (PENDING) and cancel (CANCELLED),
    so a held job never holds devices and a running job cannot be held."""
    held = JobStatus.HELD
    assert held not in ACTIVE and held not in TERMINAL and not held.holds_devices
    assert {a for a, b in TRANSITIONS if b is held} == {JobStatus.PENDING}
    assert {b for a, b in TRANSITIONS if a is held} == {JobStatus.PENDING, JobStatus.CANCELLED}
    assert transition(3, held, JobStatus.PENDING, "").reason == "released"
    assert not allowed(JobStatus.RUNNING, held) and not allowed(held, JobStatus.STARTING)
