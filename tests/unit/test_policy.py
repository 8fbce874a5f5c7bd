"""The fair-share policy, one rule per test (builders in policy_builders.py)."""

from __future__ import annotations

from scheduler.policy import decide
from scheduler.types import DEFAULT_CLASSES, PolicyConfig, Quota, WaitCode

from tests.unit.policy_builders import (
    A100, B910, NOW, make_job, make_node, make_running, make_snapshot, quota, tree,
)


def started(d) -> list[int]:  # type: ignore[no-untyped-def]
    return [s.job_id for s in d.starts]


def waiting(d) -> dict[int, object]:  # type: ignore[no-untyped-def]
    return {w.job_id: w for w in d.waits}


# ---------------------------------------------------------------------------- priority


def test_fair_share_serves_the_org_that_used_less_of_its_share() -> None:
    """Invariant: with one server for two equal 8-device jobs, the org with the lower usage
    (higher Fair Tree level fairshare) starts first; the factors are reported."""
    snap = make_snapshot([make_node("a")], [make_job(1, 8, org="heavy"), make_job(2, 8, org="light")],
                         share_tree=tree({"heavy": ("pool", 1, 900.0), "light": ("pool", 1, 100.0)}))
    d = decide(snap, NOW)
    assert started(d) == [2]
    assert dict((n, f) for n, f, _ in d.starts[0].priority.factors)["fairshare"] == 1.0
    assert "fairshare" in d.starts[0].reason and waiting(d)[1].priority.value < d.starts[0].priority.value


def test_age_breaks_equal_fair_share() -> None:
    """Invariant: all else equal, the job that waited longer goes first."""
    snap = make_snapshot([make_node("a")], [make_job(1, 8, t=50), make_job(2, 8, t=0)])
    assert started(decide(snap, NOW)) == [2]


def test_priority_class_outweighs_age() -> None:
    """Invariant: a high-class job starts before an older normal one (QOS weight)."""
    snap = make_snapshot([make_node("a")], [make_job(1, 8, t=0), make_job(2, 8, t=90, cls="high")])
    assert started(decide(snap, NOW)) == [2]


def test_shorter_time_limits_go_first() -> None:
    """Invariant: all else equal, the job asking for less time starts first (shortness factor),
    and the factor is reported."""
    snap = make_snapshot([make_node("a")], [make_job(1, 8, t=0, limit=36000), make_job(2, 8, t=0, limit=600)])
    d = decide(snap, NOW)
    assert started(d) == [2]
    factors = {n: f for n, f, _ in d.starts[0].priority.factors}
    assert factors["shortness"] > {n: f for n, f, _ in waiting(d)[1].priority.factors}["shortness"]


def test_unknown_priority_class_waits_with_its_code() -> None:
    """Invariant: a job naming a class that does not exist never starts and says why."""
    d = decide(make_snapshot([make_node("a")], [make_job(1, cls="vip")]), NOW)
    assert waiting(d)[1].code is WaitCode.UNKNOWN_CLASS


def test_jobs_of_a_suspended_org_wait_and_neither_reserve_nor_reclaim() -> None:
    """Invariants: a suspended org's jobs never start, even with free devices and a
    guarantee, and say why; they take no reservation (a lower job of an active org starts on
    the free server) and preempt nobody; other orgs are unaffected."""
    snap = make_snapshot([make_node("a")], [make_job(1, 8, org="s", cls="high", t=0), make_job(2, 8, org="ok", t=50)],
                         quotas={("s", A100): quota(8)}, inactive_orgs={"s": "suspended"})
    d = decide(snap, NOW)
    assert started(d) == [2] and not d.preemptions
    w = waiting(d)[1]
    assert w.code is WaitCode.ORG_NOT_ACTIVE and "suspended" in w.reason
    full = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 8, org="s")],
                         running=[make_running(9, "a", tuple(range(8)), org="borrower")],
                         quotas={("s", A100): quota(8)}, inactive_orgs={"s": "suspended"})
    d = decide(full, NOW)
    assert not d.preemptions and waiting(d)[1].code is WaitCode.ORG_NOT_ACTIVE
    assert decide(make_snapshot(full.nodes, full.pending, full.running, quotas=full.quotas), NOW).preemptions, \
        "without the suspension the same job reclaims (the check above can fail)"


# ---------------------------------------------------------------------------- quotas


def test_guaranteed_jobs_go_before_borrowing_ones() -> None:
    """Invariant: a job inside its org's guarantee is served before a higher-priority job
    that would borrow."""
    snap = make_snapshot([make_node("a")], [make_job(1, 8, org="b", cls="high"), make_job(2, 8, org="g")],
                         quotas={("g", A100): quota(8)})
    assert started(decide(snap, NOW)) == [2]


def test_org_and_pool_limits() -> None:
    """Invariant: a job that would take its org (or pool) over its limit waits over_quota,
    while another org's job starts."""
    running = [make_running(10, "a", (0, 1, 2, 3), org="o1")]
    snap = make_snapshot([make_node("a")], [make_job(1, 4, org="o1"), make_job(2, 2, org="o3", pool="small")], running,
                         quotas={("o1", A100): quota(0, 6)}, pool_quotas={("small", A100): quota(0, 1)})
    d = decide(snap, NOW)
    assert waiting(d)[1].code is WaitCode.OVER_QUOTA and "org o1" in waiting(d)[1].reason
    assert waiting(d)[2].code is WaitCode.OVER_QUOTA and "pool small" in waiting(d)[2].reason
    snap2 = make_snapshot([make_node("a")], [make_job(1, 2, org="o1")], running, quotas={("o1", A100): quota(0, 6)})
    assert started(decide(snap2, NOW)) == [1]


def test_funds_gate_admission_and_are_not_overcommitted() -> None:
    """Invariant: the hold (time limit × devices × price) must be covered; two jobs that are
    each affordable alone do not both start when the org can pay for one."""
    jobs = [make_job(1, 1, limit=3600), make_job(2, 1, limit=3600)]
    snap = make_snapshot([make_node("a")], jobs, prices={A100: 1200}, funds={"o1": 1500})
    d = decide(snap, NOW)
    assert started(d) == [1]
    assert waiting(d)[2].code is WaitCode.INSUFFICIENT_FUNDS and "1200 fen" in waiting(d)[2].reason


def test_vouchers_count_in_the_funds_check_for_eligible_types_only() -> None:
    """Invariants: a voucher paying 30 % of A100 costs makes a job affordable that the account
    alone could not cover; on a type the program does not pay for, the account must cover all."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from quota.types import Voucher, VoucherBalance, Wallet

    t0, t1 = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)  # NOW is in January 1970
    voucher = VoucherBalance(Voucher(1, 1, 1, 10_000, t0, t1), Decimal("0.3"), frozenset({A100}), 10_000)
    wallets = {"o1": Wallet(900, (voucher,))}  # the hold is 1,200: 360 from the voucher, 840 from the account
    snap = make_snapshot([make_node("a"), make_node("n", B910)], [make_job(1, 1, limit=3600)], prices={A100: 1200, B910: 1200},
                         wallets=wallets)
    assert started(decide(snap, NOW)) == [1]
    snap = make_snapshot([make_node("a"), make_node("n", B910)], [make_job(1, 1, types=(B910,), limit=3600)],
                         prices={A100: 1200, B910: 1200}, wallets=wallets)
    w = waiting(decide(snap, NOW))[1]
    assert w.code is WaitCode.INSUFFICIENT_FUNDS and "1200 fen (0 from vouchers" in w.reason


# ---------------------------------------------------------------------------- placement


def test_best_fit_keeps_whole_servers_free() -> None:
    """Invariant: a 2-device job goes to the server with the fewest free devices that fit,
    not to an empty one."""
    nodes = [make_node("empty"), make_node("busy", used=(0, 1, 2, 3, 4, 5))]
    d = decide(make_snapshot(nodes, [make_job(1, 2)]), NOW)
    assert d.starts[0].placements[0].node == "busy" and d.starts[0].placements[0].devices == (6, 7)


def test_gang_prefers_one_rack_and_gets_all_or_nothing() -> None:
    """Invariants: a 2-server job lands in one rack when a rack can hold it; with too few
    free servers it does not start at all."""
    nodes = [make_node("r1a", rack="r1"), make_node("r2a", rack="r2"), make_node("r2b", rack="r2")]
    d = decide(make_snapshot(nodes, [make_job(1, 8, nodes=2)]), NOW)
    assert sorted(p.node for p in d.starts[0].placements) == ["r2a", "r2b"]
    d = decide(make_snapshot(nodes[:2], [make_job(1, 8, nodes=3)]), NOW)
    assert not d.starts


def test_fractional_jobs_share_devices_best_fit() -> None:
    """Invariant: fractional jobs pack onto partly used devices (the fullest that fits)
    before taking a whole free device."""
    node = make_node("a", shared=((0, 300), (1, 600)))
    d = decide(make_snapshot([node], [make_job(1, milli=250), make_job(2, milli=500), make_job(3, milli=500)]), NOW)
    where = {s.job_id: s.placements[0].devices for s in d.starts}
    assert where[1] == (0,)  # 300 free: the tightest fit for 250
    assert where[2] == (1,)  # 600 free fits 500
    assert where[3] == (2,)  # nothing shared has 500 left: a whole device becomes shared


def test_heterogeneous_job_takes_the_cheaper_type_that_can_start() -> None:
    """Invariants: among types that can start it now, the cheaper one for the org wins; a
    type with no room is skipped."""
    nodes = [make_node("a", A100), make_node("n", B910)]
    snap = make_snapshot(nodes, [make_job(1, 2, types=(A100, B910))], prices={A100: 1200, B910: 800})
    assert decide(snap, NOW).starts[0].accelerator_type == B910
    full = [make_node("a", A100), make_node("n", B910, used=tuple(range(8)))]
    snap = make_snapshot(full, [make_job(1, 2, types=(B910, A100))], prices={A100: 1200, B910: 800})
    assert decide(snap, NOW).starts[0].accelerator_type == A100


def test_blocked_heterogeneous_job_reserves_where_it_starts_earliest() -> None:
    """Invariant: a job accepting two types that can start on neither now is reserved on the
    type that frees up first, even if it prefers the other."""
    nodes = [make_node("a", A100, used=tuple(range(8))), make_node("n", B910, used=tuple(range(8)))]
    running = [make_running(10, "a", tuple(range(8)), A100, started=NOW, limit=9000),
               make_running(11, "n", tuple(range(8)), B910, started=NOW, limit=600)]
    d = decide(make_snapshot(nodes, [make_job(1, 4, types=(A100, B910))], running), NOW)
    w = waiting(d)[1]
    assert w.code is WaitCode.RESERVED and "ascend-910b" in w.reason and w.estimated_start == NOW + 600


def test_never_fits() -> None:
    """Invariant: a job larger than any server of its types says so."""
    d = decide(make_snapshot([make_node("a")], [make_job(1, 16)]), NOW)
    assert waiting(d)[1].code is WaitCode.NEVER_FITS


# ---------------------------------------------------------------------------- backfill


def backfill_snapshot(*extra):  # type: ignore[no-untyped-def]
    """Two servers: 'a' has 4 free (4 busy until NOW+1000), 'b' is full until NOW+5000.
    Job 1 (8 devices, top priority) cannot start: it is reserved on 'a' at NOW+1000."""
    nodes = [make_node("a", used=(0, 1, 2, 3)), make_node("b", used=tuple(range(8)))]
    running = [make_running(10, "a", (0, 1, 2, 3), started=NOW - 2600, limit=3600),
               make_running(11, "b", tuple(range(8)), started=NOW, limit=5000)]
    return make_snapshot(nodes, [make_job(1, 8, cls="high"), *extra], running)


def test_top_blocked_job_gets_a_reservation_with_estimated_start() -> None:
    """Invariant: the highest-priority job that cannot start is reserved at the earliest
    time enough devices free up, from running jobs' time limits."""
    w = waiting(decide(backfill_snapshot(), NOW))[1]
    assert w.code is WaitCode.RESERVED and w.estimated_start == NOW + 1000 and "a" in w.reason


def test_short_job_backfills_long_job_does_not_delay_the_reservation() -> None:
    """Invariants: a job that ends before the reservation starts now on the reserved server;
    one that would run past it waits (blocked_by_reservation, naming the job)."""
    d = decide(backfill_snapshot(make_job(2, 2, limit=500), make_job(3, 2, limit=9000)), NOW)
    assert started(d) == [2]
    w = waiting(d)[3]
    assert w.code is WaitCode.BLOCKED_BY_RESERVATION and "job 1" in w.reason


# ---------------------------------------------------------------------------- reclaim


def test_reclaim_preempts_the_fewest_most_recent_borrowing_jobs() -> None:
    """Invariants: an org below its guarantee whose job cannot start preempts borrowing jobs
    of another org — the most recently started first, and no more than needed — and waits
    with a reservation for the freed devices."""
    running = [make_running(10, "a", (0, 1, 2, 3), started=NOW - 300), make_running(11, "a", (4, 5), started=NOW - 200),
               make_running(12, "a", (6, 7), started=NOW - 100)]
    snap = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 2, org="g")], running,
                         quotas={("g", A100): quota(4)})
    d = decide(snap, NOW)
    assert [(p.job_id, p.for_job) for p in d.preemptions] == [(12, 1)]
    w = waiting(d)[1]
    assert w.code is WaitCode.RECLAIMING and w.estimated_start == NOW + 10


def test_lowest_priority_victims_first() -> None:
    """Invariant: among borrowing jobs, a preemptible-class job is preempted before a more
    recent normal one."""
    running = [make_running(10, "a", (0, 1, 2, 3), started=NOW - 300, cls="preemptible"),
               make_running(11, "a", (4, 5, 6, 7), started=NOW - 100)]
    snap = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 4, org="g")], running,
                         quotas={("g", A100): quota(4)})
    assert [p.job_id for p in decide(snap, NOW).preemptions] == [10]


def test_jobs_inside_their_own_guarantee_are_never_preempted() -> None:
    """Invariant: a job running within its org's guarantee is not a victim, even if another
    org is below its own guarantee (over-promised capacity waits instead)."""
    running = [make_running(10, "a", tuple(range(8)), org="o2")]
    snap = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 4, org="g")], running,
                         quotas={("g", A100): quota(4), ("o2", A100): quota(8)})
    d = decide(snap, NOW)
    assert not d.preemptions and waiting(d)[1].code is not WaitCode.RECLAIMING


def test_no_second_round_while_victims_stop_and_no_way_back() -> None:
    """Invariants: while victims are stopping, the reclaiming job waits without preempting
    more; and the victim org's requeued job cannot reclaim the devices back (it is not
    below its guarantee), so there is no preemption loop."""
    stopping = make_running(12, "a", (6, 7), started=NOW - 100, stop_by=NOW + 5)
    running = [make_running(10, "a", (0, 1, 2, 3, 4, 5), started=NOW - 300), stopping]
    snap = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 2, org="g")], running,
                         quotas={("g", A100): quota(4)})
    d = decide(snap, NOW)
    assert not d.preemptions and waiting(d)[1].code is WaitCode.RECLAIMING
    # After the swap: g runs 2 within its guarantee; o2's job 12 is pending again.
    after = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(12, 2, org="o2")],
                          [make_running(10, "a", (0, 1, 2, 3, 4, 5), started=NOW - 300),
                           make_running(1, "a", (6, 7), org="g", started=NOW)],
                          quotas={("g", A100): quota(4)})
    d = decide(after, NOW)
    assert not d.preemptions and not d.starts


def test_pool_guarantee_reclaims_for_its_orgs_and_protects_their_jobs() -> None:
    """Invariants: an org without its own guarantee, in a pool below the pool's guarantee,
    reclaims from another pool's borrowing job; a job inside its pool's guarantee is
    protected from reclaim like one inside its org's."""
    running = [make_running(10, "a", tuple(range(8)), org="o2", pool="other")]
    snap = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 4, org="g", pool="mine")], running,
                         pool_quotas={("mine", A100): quota(4)})
    assert [(p.job_id, p.for_job) for p in decide(snap, NOW).preemptions] == [(10, 1)]
    protected = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 4, org="g", pool="mine")], running,
                              pool_quotas={("mine", A100): quota(4), ("other", A100): quota(8)})
    assert not decide(protected, NOW).preemptions


def test_reclaim_can_be_switched_off() -> None:
    """Invariant: with reclaim disabled no job is ever preempted."""
    running = [make_running(10, "a", tuple(range(8)))]
    snap = make_snapshot([make_node("a", used=tuple(range(8)))], [make_job(1, 2, org="g")], running,
                         quotas={("g", A100): Quota(4)}, config=PolicyConfig(reclaim=False),
                         classes=dict(DEFAULT_CLASSES))
    assert not decide(snap, NOW).preemptions


def test_with_a_target_workload_one_server_jobs_go_where_fragmentation_grows_least() -> None:
    """Invariants: when the snapshot carries the target workload, the policy places a
    one-server job exactly where the FGD score less the scarcity penalty (policy/scoring.py,
    shapes' servers counted over every type) says, over every accepted type at once;
    `placement=bucket` keeps best fit by free devices."""
    from dataclasses import replace

    from scheduler.policy import capacity, fragment, scarcity, scoring

    nodes = [make_node("a", used=(0, 1, 2, 3, 4, 5)), make_node("b", used=(0,)), make_node("n", B910, used=(0, 1, 2))]
    workload = fragment.Workload.from_requests([(1, 1000, 2, ())] * 5 + [(1, 1000, 4, ())] * 5)
    job = make_job(1, 2, types=(A100, B910))
    snap = make_snapshot(nodes, [job], workload=workload)
    start = decide(snap, NOW).starts[0]
    by_type = {t: list(c.nodes.values()) for t, c in capacity.build(tuple(nodes)).items()}
    cands = [n for ns in by_type.values() for n in ns]
    node, devices = scoring.choose("fgd", job.resources, cands, workload,
                                   scarcity=lambda: scarcity.ShapeFits(workload, by_type).counts)
    assert (start.placements[0].node, start.placements[0].devices) == (node.name, devices)
    bucket = decide(replace(snap, config=PolicyConfig(placement="bucket")), NOW).starts[0]
    assert bucket.placements[0].node == "a"  # the fullest A100 server that fits
