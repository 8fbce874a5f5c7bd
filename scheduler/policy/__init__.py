"""Scheduling policies: pure functions `decide(snapshot, now) -> Decisions`.

`decide` is the suanli policy (`multifactor.py`: fair share, guarantees and reclaim, limits,
funds, gang, backfill, fragmentation-aware placement); `fifo.decide` is the first-fit FIFO
baseline. Invariant: nothing under this package does I/O, reads a clock or draws random
numbers; the live loop and the simulator call the same `decide`.
"""

from scheduler.policy.multifactor import decide

__all__ = ["decide"]
