"""Fleet decisions shared by replicas: named leases in the database (`fleet_leases`).

Several `comfyfleet serve` processes on one database each hold a pool, but the money and the instance
limit are the fleet's. So:

- renting is decided under the `rent` lease: the holder counts the instances every replica knows (the
  ledger; a rental is written there before its create call is sent) against `POOL_MAX_INSTANCES` and
  `SPEND_CAP_USD`, and releases the lease only once its create has answered (the ledger row then says
  what it rented). Two replicas racing for the last slot therefore rent once: the second counts the
  first's row.
- the cleanup runs on whichever replica holds the `cleanup` lease; the holder renews it on every
  heartbeat, and when it dies (no renewal for `ttl_s`) or stops (it releases) another replica takes over.

A lease is a row (name, holder, until). Taking it is one conditional UPDATE (`WHERE holder = me OR until
< now`), atomic on SQLite and on PostgreSQL alike: of two replicas racing, exactly one sees a row count
of 1. Times are the database clients' wall clocks; replicas are assumed to agree to well under a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import Float, String, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.pool.provider import LIVE_STATES, Instance

log = logging.getLogger(__name__)

RENT_LEASE = "rent"
CLEANUP_LEASE = "cleanup"


class FleetLease(Base):
    __tablename__ = "fleet_leases"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    until: Mapped[float] = mapped_column(Float, default=0.0)
    acquired_at: Mapped[float | None] = mapped_column(Float, nullable=True)


_L = FleetLease.__table__
_TAKE = (
    update(_L)
    .where(
        _L.c.name == bindparam("_name"),
        or_(_L.c.holder == bindparam("_me"), _L.c.holder.is_(None), _L.c.until < bindparam("_now")),
    )
    .values(holder=bindparam("holder"), until=bindparam("until"), acquired_at=bindparam("acquired_at"))
)


def _insert_ignore(conn: Any, name: str) -> Any:
    """INSERT the lease row unless it exists (ON CONFLICT DO NOTHING, on SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(_L).values(name=name, holder=None, until=0.0).on_conflict_do_nothing()


class FleetLocks:
    """Named leases in `fleet_leases`, held by `holder` (this replica's id)."""

    def __init__(self, engine: AsyncEngine, holder: str, *, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.holder, self._clock = engine, holder, clock

    async def try_acquire(self, name: str, ttl_s: float) -> bool:
        """Take or renew `name` for `ttl_s`; False when another holder's lease is still valid."""
        now = self._clock()
        params = {"_name": name, "_me": self.holder, "_now": now, "holder": self.holder, "until": now + ttl_s}
        async with self.engine.begin() as conn:
            # make sure the row exists (whoever inserts it first), then compete on one conditional UPDATE
            await conn.execute(_insert_ignore(conn, name))
            row = (await conn.execute(select(_L.c.holder, _L.c.acquired_at).where(_L.c.name == name))).first()
            keep = row is not None and row.holder == self.holder and row.acquired_at
            params["acquired_at"] = row.acquired_at if keep else now
            return (await conn.execute(_TAKE, params)).rowcount == 1

    async def release(self, name: str) -> None:
        """Give `name` up now (if held), so another replica takes over without waiting for the TTL."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_L).where(_L.c.name == name, _L.c.holder == self.holder).values(holder=None, until=0.0)
            )

    async def holder_of(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_L.c.holder, _L.c.until).where(_L.c.name == name))).first()
        if row is None or row.holder is None or row.until < self._clock():
            return None
        return row.holder

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, ttl_s: float, *, wait_s: float, poll_s: float = 0.05
    ) -> AsyncIterator[bool]:
        """Hold `name` for the block (yields False when not had within `wait_s`); released after. While
        the block runs the lease is renewed every `ttl_s / 3`, so `ttl_s` only bounds how long a holder
        that died blocks the others, not how long the block may take."""
        deadline = time.monotonic() + wait_s
        delay = poll_s
        got = await self.try_acquire(name, ttl_s)
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            got = await self.try_acquire(name, ttl_s)
        renew = asyncio.get_running_loop().create_task(self._renew(name, ttl_s)) if got else None
        try:
            yield got
        finally:
            if renew is not None:
                renew.cancel()
                with contextlib.suppress(BaseException):
                    await renew
            if got:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.release(name))

    async def _renew(self, name: str, ttl_s: float) -> None:
        while True:
            await asyncio.sleep(ttl_s / 3)
            try:
                await self.try_acquire(name, ttl_s)
            except Exception as exc:
                log.warning("lease %s: renewing failed: %s", name, exc)

    async def forget(self, name: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(_L).where(_L.c.name == name))


class FleetGate:
    """The pool's permission to rent, counted over the whole fleet (every replica's ledger rows).

    `admit()` is used as `async with gate.admit(provider, price, ...) as refusal:`; inside the block
    with `refusal is None` the caller rents (its ledger row is written inside the block); otherwise
    `refusal` says why not and nothing is rented."""

    def __init__(
        self,
        locks: FleetLocks,
        ledger: Any,
        *,
        max_instances: int,
        spend_cap_usd: float,
        max_price_per_hour: float,
        idle_ttl_s: float,
        ttl_s: float = 120.0,
        wait_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.locks, self.ledger = locks, ledger
        self.max_instances, self.spend_cap_usd = max_instances, spend_cap_usd
        self.max_price_per_hour, self.idle_ttl_s = max_price_per_hour, idle_ttl_s
        self.ttl_s, self.wait_s, self._clock = ttl_s, wait_s, clock
        # The lease is per replica (its holder is the replica id, so taking it again from the same
        # replica succeeds): rentals of one replica also take turns among themselves here.
        self._local = asyncio.Lock()

    async def fleet(self, provider: str) -> list[Instance]:
        return [
            i
            for i in await self.ledger.list(alive_only=True)
            if i.provider == provider and i.state in LIVE_STATES
        ]

    def refusal(self, live: list[Instance]) -> str | None:
        if len(live) >= self.max_instances:
            return f"the fleet is at its maximum of {self.max_instances} instances (all replicas)"
        now, ttl_h = self._clock(), self.idle_ttl_s / 3600.0
        projected = sum(i.spent_usd(now) + i.price_per_hour * ttl_h for i in live)
        if projected + self.max_price_per_hour * ttl_h > self.spend_cap_usd:
            return (
                f"renting another instance would exceed the spend cap of ${self.spend_cap_usd:.2f} "
                f"(live instances of all replicas are projected at ${projected:.2f})"
            )
        return None

    @contextlib.asynccontextmanager
    async def admit(self, provider: str) -> AsyncIterator[str | None]:
        async with self._local, self.locks.hold(RENT_LEASE, self.ttl_s, wait_s=self.wait_s) as got:
            if not got:
                yield "another replica is deciding a rental; trying again shortly"
                return
            yield self.refusal(await self.fleet(provider))
