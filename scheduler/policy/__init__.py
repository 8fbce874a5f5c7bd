"""Scheduling policies: pure functions `decide(snapshot, now) -> Decisions`.

Invariant: nothing under this package does I/O, reads a clock or draws random numbers; the
live loop and the simulator call the same `decide`.
"""

from scheduler.policy.fifo import decide

__all__ = ["decide"]
