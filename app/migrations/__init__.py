"""Schema migrations (Alembic) for SQLite and PostgreSQL.

`env.py`, `script.py.mako` and `versions/` are Alembic's script directory, shipped inside the package so
an installed comfyfleet can migrate its own database. `runner.py` runs them (locking, adoption of
databases made before migrations existed); `cli.py` is `comfyfleet db upgrade|current|revision|history`.
"""
