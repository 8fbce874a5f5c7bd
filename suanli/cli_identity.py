"""CLI commands for pools, members, tokens and who-am-I. (Being built.)"""

from __future__ import annotations

import typer


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
