"""CLI commands for statements per org and month, and program reports for the funder. (Being built.)"""

from __future__ import annotations

import typer


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
