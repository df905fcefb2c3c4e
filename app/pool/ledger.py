"""The instance ledger: every GPU we rent, written down before the rent call is even sent.

A crash between "Vast created it" and "we stored its id" would bill forever, so the provider records the
intent (state CREATING, label, offer, price) first and fills in the id afterwards; `reconcile` later
matches rows to Vast's list by label. The row key is the label (unique per create attempt); the provider's
instance id is a separate indexed column because it is unknown until the create answers.

The ComfyUI token is stored (the control plane needs it after a restart) but never rendered: `Instance`
and `ComfyEndpoint` keep it out of `repr`, and loading a row registers it with `app.redact`.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, String, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.pool.provider import LIVE_STATES, ComfyEndpoint, Instance, InstanceState, SSHTarget
from app.redact import register_secret


class InstanceRow(Base):
    __tablename__ = "instances"

    label: Mapped[str] = mapped_column(String(256), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), index=True, default="")
    provider: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    price_per_hour: Mapped[float] = mapped_column(Float, default=0.0)
    ssh: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    comfy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    comfy_dir: Mapped[str] = mapped_column(String(512), default="/workspace/ComfyUI")
    created_at: Mapped[float] = mapped_column(Float)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    destroyed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    machine_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    offer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_msg: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


def _ssh_to_json(ssh: SSHTarget | None) -> dict[str, Any] | None:
    if ssh is None:
        return None
    return {"host": ssh.host, "port": ssh.port, "user": ssh.user, "host_key": ssh.host_key}


def _comfy_to_json(c: ComfyEndpoint | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "url": c.url,
        "via_tunnel": c.via_tunnel,
        "remote_host": c.remote_host,
        "remote_port": c.remote_port,
        "token": c.token,
        "basic_user": c.basic_user,
        "basic_password": c.basic_password,
    }


def _fill(row: InstanceRow, inst: Instance) -> None:
    row.id = inst.id or ""
    row.provider = inst.provider
    row.state = str(inst.state)
    row.price_per_hour = float(inst.price_per_hour)
    row.ssh = _ssh_to_json(inst.ssh)
    row.comfy = _comfy_to_json(inst.comfy)
    row.comfy_dir = inst.comfy_dir
    row.created_at = inst.created_at
    row.ready_at = inst.ready_at
    row.destroyed_at = inst.destroyed_at
    row.last_used_at = inst.last_used_at
    row.machine_id = inst.machine_id
    row.offer_id = inst.offer_id
    # Free text from the provider: PostgreSQL refuses NUL in text, and enforces the column's length.
    row.status_msg = (inst.status_msg or None) and inst.status_msg.replace("\x00", "\ufffd")[:1024]
    row.gpu_name = inst.gpu_name and inst.gpu_name[:64]
    row.simulated = inst.simulated
    row.meta = dict(inst.meta)
    row.updated_at = time.time()


def _to_instance(row: InstanceRow) -> Instance:
    comfy = None
    if row.comfy:
        comfy = ComfyEndpoint(**row.comfy)
        register_secret(comfy.token)
        register_secret(comfy.basic_password)
    return Instance(
        provider=row.provider,
        id=row.id,
        label=row.label,
        state=InstanceState(row.state),
        price_per_hour=row.price_per_hour,
        ssh=SSHTarget(**row.ssh) if row.ssh else None,
        comfy=comfy,
        comfy_dir=row.comfy_dir,
        created_at=row.created_at,
        ready_at=row.ready_at,
        destroyed_at=row.destroyed_at,
        last_used_at=row.last_used_at,
        machine_id=row.machine_id,
        offer_id=row.offer_id,
        gpu_name=row.gpu_name,
        status_msg=row.status_msg,
        simulated=row.simulated,
        meta=dict(row.meta or {}),
    )


class InstanceLedger:
    """Durable record of every instance (async SQLAlchemy). All methods commit before returning."""

    def __init__(self, sessionmaker: async_sessionmaker) -> None:
        self._sessions = sessionmaker

    async def record(self, instance: Instance) -> None:
        """Insert or overwrite the row for `instance.label` (call BEFORE the create request)."""
        async with self._sessions() as session, session.begin():
            row = await session.get(InstanceRow, instance.label)
            if row is None:
                row = InstanceRow(label=instance.label)
                session.add(row)
            _fill(row, instance)

    async def update(self, instance: Instance) -> None:
        await self.record(instance)

    async def get(self, instance_id: str) -> Instance | None:
        """By provider id (or, for a row whose id is not known yet, by label)."""
        async with self._sessions() as session:
            if instance_id:
                rows = (
                    await session.execute(select(InstanceRow).where(InstanceRow.id == instance_id))
                ).scalars()
                found = sorted(rows, key=lambda r: r.created_at, reverse=True)
                if found:
                    return _to_instance(found[0])
            row = await session.get(InstanceRow, instance_id)
            return _to_instance(row) if row else None

    async def by_label(self, label: str) -> Instance | None:
        async with self._sessions() as session:
            row = await session.get(InstanceRow, label)
            return _to_instance(row) if row else None

    async def list(self, alive_only: bool = True, *, provider: str | None = None) -> list[Instance]:
        stmt = select(InstanceRow).order_by(InstanceRow.created_at)
        if alive_only:
            stmt = stmt.where(InstanceRow.state.in_([str(s) for s in LIVE_STATES]))
        if provider:
            stmt = stmt.where(InstanceRow.provider == provider)
        async with self._sessions() as session:
            return [_to_instance(r) for r in (await session.execute(stmt)).scalars()]

    async def mark_destroyed(
        self, instance_id: str, *, at: float | None = None, reason: str | None = None
    ) -> None:
        """Mark the row (by id, or by label) destroyed; idempotent, keeps the first destroy time."""
        async with self._sessions() as session, session.begin():
            rows = []
            if instance_id:  # "" is every row whose create has not answered yet, never one instance
                stmt = select(InstanceRow).where(InstanceRow.id == instance_id)
                rows = list((await session.execute(stmt)).scalars())
            if not rows:
                row = await session.get(InstanceRow, instance_id)
                rows = [row] if row else []
            for row in rows:
                if row.state != str(InstanceState.DESTROYED):
                    row.state = str(InstanceState.DESTROYED)
                    row.destroyed_at = at or time.time()
                    if reason:
                        row.status_msg = reason[:1024]
                    row.updated_at = time.time()

    async def failed_machines(self, provider: str = "vast") -> set[str]:
        """Machines whose instances failed because of the host (`meta.machine_fault`)."""
        out: set[str] = set()
        for inst in await self.list(alive_only=False, provider=provider):
            if inst.machine_id and inst.meta.get("machine_fault"):
                out.add(inst.machine_id)
        return out
