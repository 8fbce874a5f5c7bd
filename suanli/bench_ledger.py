"""`suanli bench ledger`: settlements per second on PostgreSQL. (Being built.)"""

from __future__ import annotations

import typer


def register(bench_app: typer.Typer) -> None:
    """Add `suanli bench ledger` to the bench app."""
