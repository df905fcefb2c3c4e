"""Alembic revisions, one file each (`comfyfleet db revision -m "..."` writes the next one)."""
