"""`comfyfleet` commands of the vast room."""

from __future__ import annotations

import typer


def register(cli: typer.Typer) -> None:
    """Add this room's commands to the root CLI (filled in by the room's owner)."""
    return None
