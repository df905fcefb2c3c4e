"""InstanceLedger: intent recorded before the id is known, then filled in; secrets round-trip quietly."""

from __future__ import annotations

import pytest

from app.db import init_db, make_engine, make_sessionmaker
from app.pool.ledger import InstanceLedger
from app.pool.provider import ComfyEndpoint, Instance, InstanceState, SSHTarget
from app.redact import redact

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
async def ledger(database):
    engine = make_engine(database.url)
    await init_db(engine)
    yield InstanceLedger(make_sessionmaker(engine))
    await engine.dispose()


async def test_record_intent_then_fill_in_id(ledger):
    inst = Instance(
        provider="vast",
        id="",
        label="comfyfleet-t-a",
        price_per_hour=0.4,
        offer_id="7",
        comfy=ComfyEndpoint(token="tok-secret-123456"),
    )
    await ledger.record(inst)
    pending = await ledger.by_label("comfyfleet-t-a")
    assert pending is not None and pending.state == InstanceState.CREATING and pending.id == ""
    inst.id, inst.state = "4242", InstanceState.BOOTING
    inst.ssh = SSHTarget("1.2.3.4", 40022)
    await ledger.update(inst)
    got = await ledger.get("4242")
    assert got.label == "comfyfleet-t-a" and got.ssh.port == 40022 and got.offer_id == "7"
    assert got.comfy.token == "tok-secret-123456"
    assert "tok-secret-123456" not in repr(got)
    assert redact("token tok-secret-123456") == "token ***"  # registered on load


async def test_list_alive_only_and_mark_destroyed(ledger):
    for i, state in enumerate([InstanceState.BOOTING, InstanceState.READY, InstanceState.DESTROYED]):
        await ledger.record(Instance(provider="vast", id=str(i), label=f"l{i}", state=state))
    assert {i.id for i in await ledger.list()} == {"0", "1"}
    assert len(await ledger.list(alive_only=False)) == 3
    await ledger.mark_destroyed("1", at=123.0)
    await ledger.mark_destroyed("1", at=999.0)  # idempotent, keeps the first time
    gone = await ledger.get("1")
    assert gone.state == InstanceState.DESTROYED and gone.destroyed_at == 123.0
    await ledger.mark_destroyed("l0")  # by label when the id is unknown
    assert {i.id for i in await ledger.list()} == set()


async def test_failed_machines_come_from_machine_faults(ledger):
    await ledger.record(
        Instance(provider="vast", id="1", label="a", machine_id="m1", meta={"machine_fault": True})
    )
    await ledger.record(Instance(provider="vast", id="2", label="b", machine_id="m2"))
    assert await ledger.failed_machines() == {"m1"}
