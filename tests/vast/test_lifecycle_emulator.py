"""VastProvider against the R5 Vast.ai emulator: every fault switch, and the money-safety guarantees."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.pool.provider import CreateRequest, InstanceState
from app.redact import redact
from app.sim.vast import make_offer
from app.vast.errors import AuthError, CreateAmbiguous, InstanceFailed, InsufficientCredit, NoOffers
from app.vast.provider import VastProvider
from tests.vast.simworld import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

REQ = CreateRequest(workflow="wan", disk_gb=41.0)


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


async def ledger_ids(provider: VastProvider) -> dict[str, str]:
    return {i.label: i.id for i in await provider.ledger.list(alive_only=False)}


async def test_acquire_rents_the_best_offer_and_waits_for_ssh(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        ranked = await p.search(REQ)
        inst = await p.acquire(REQ, soon())
        assert inst.state == InstanceState.PROVISIONING
        assert inst.label.startswith("comfyfleet-t-") and inst.offer_id == str(ranked[0].id)
        assert inst.ssh is not None and inst.ssh.host == "127.0.0.1"
        assert list(w.live()) == [int(inst.id)]
        body = w.backend.boots[0][1]
        assert body["label"] == inst.label and body["cancel_unavail"] is True
        assert body["env"]["WEB_PASSWORD"] == inst.comfy.token
        assert "-p 8188:8188" not in body["env"]  # tunnel: ComfyUI never exposed
        assert inst.comfy.via_tunnel and inst.comfy.remote_port == 18188
        assert body["runtype"].startswith("ssh")
        pub = (w.settings.effective_ssh_key_path.parent / "id_ed25519.pub").read_text().strip()
        assert pub in w.backend.boots[0][2]  # our key reached the instance
        row = await p.ledger.get(inst.id)
        assert row.label == inst.label and row.state == InstanceState.PROVISIONING
        assert redact(f"token={inst.comfy.token}") == "token=***"  # the ComfyUI token is a registered secret


async def test_direct_comfy_access_publishes_8188_and_fills_the_url(tmp_path):
    async with world(tmp_path) as w:
        settings = w.settings.model_copy(update={"comfy_access": "direct"})
        p = await w.provider(settings=settings)
        inst = await p.acquire(REQ, soon())
        body = w.backend.boots[0][1]
        assert body["env"]["-p 8188:8188"] == "1"
        assert inst.comfy.via_tunnel is False and inst.comfy.url.startswith("http://127.0.0.1:")


async def test_interruptible_bids_min_bid_times_margin(tmp_path):
    async with world(tmp_path) as w:
        settings = w.settings.model_copy(update={"vast_interruptible": True, "vast_bid_margin": 1.2})
        p = await w.provider(settings=settings)
        inst = await p.create(REQ)
        offer = w.emu.market[int(inst.offer_id)]
        created = w.emu.instances[int(inst.id)]
        assert created.body["price"] == pytest.approx(round(float(offer["min_bid"]) * 1.2, 4))


async def test_rate_limit_burst_is_absorbed_and_create_sent_once(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.rate_limit_burst = 4
        w.faults.rate_limit_retry_after = 0.01
        inst = await p.acquire(REQ, soon())
        assert w.creates() == 1 + sum(1 for c in w.emu.calls if c.route == "create" and c.status == 429)
        assert list(w.live()) == [int(inst.id)]


async def test_server_errors_on_reads_are_retried(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.server_errors, w.faults.server_error_route = 3, "show"
        inst = await p.acquire(REQ, soon())
        assert inst.state == InstanceState.PROVISIONING


async def test_server_error_on_create_is_resolved_by_label_not_resent(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.server_errors, w.faults.server_error_route = 1, "create"
        inst = await p.acquire(REQ, soon())
        # The 5xx came before anything was created: the label lookup found nothing, the next offer won.
        assert len(w.live()) == 1 and list(w.live()) == [int(inst.id)]
        rows = await p.ledger.list(alive_only=False)
        assert sorted(r.state for r in rows) == [InstanceState.DESTROYED, InstanceState.PROVISIONING]


async def test_offer_taken_between_search_and_create(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        first = (await p.search(REQ))[0]
        w.faults.take_offer_ids = {first.id}
        inst = await p.create(REQ)
        assert inst.offer_id != str(first.id)
        assert w.creates() == 2 and len(w.live()) == 1


async def test_every_offer_taken_researches_once_then_gives_up(tmp_path):
    offers = [make_offer(id=i, dph_base=0.3, inet_down=900.0, reliability2=0.99) for i in (1, 2)]
    async with world(tmp_path, offers=offers) as w:
        p = await w.provider()
        w.faults.take_next_creates = 10
        with pytest.raises(NoOffers, match="taken"):
            await p.create(REQ)
        assert w.creates() == 2 and not w.live()
        searches = [c for c in w.emu.calls if c.route == "search"]
        assert len(searches) == 2  # the first page and one fresh search
        assert all(r.state == InstanceState.DESTROYED for r in await p.ledger.list(alive_only=False))


@pytest.mark.parametrize("mode", ["sleep", "drop"])
async def test_duplicate_create_avoided_when_create_times_out_but_did_create(tmp_path, mode):
    async with world(tmp_path) as w:
        p = await w.provider(client=w.client(timeout=0.5))
        w.faults.create_timeouts, w.faults.create_timeout_mode, w.faults.create_timeout_s = 1, mode, 3.0
        inst = await p.create(REQ)
        assert w.creates() == 1  # never resent
        assert list(w.live()) == [int(inst.id)]
        assert inst.meta.get("create_ambiguous") is True
        assert (await p.ledger.by_label(inst.label)).id == inst.id


async def test_duplicate_create_avoided_when_label_lookup_also_fails(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider(
            client=w.client(timeout=0.5, retry_deadline_s=0.2, max_attempts=2), ambiguous_lookups=2
        )
        w.faults.create_timeouts, w.faults.create_timeout_s = 1, 3.0
        w.faults.server_errors, w.faults.server_error_route = 100, "list"
        with pytest.raises(CreateAmbiguous):
            await p.create(REQ)
        assert w.creates() == 1  # no second offer tried while a GPU may be billing
        (row,) = await p.ledger.list()
        # nobody waits for it: FAILED, so cleanup destroys whatever carries the label
        assert row.state == InstanceState.FAILED and row.id == ""
        w.faults.server_errors = 0
        report = await (await w.provider()).reconcile()
        assert [i.id for i in report.adopted] == [str(next(iter(w.live())))]
        assert report.adopted[0].state == InstanceState.FAILED


async def test_lost_instance_process_crashes_right_after_create_put(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        real_create = p.client.create_instance

        async def create_then_crash(offer_id, body):
            await real_create(offer_id, body)
            raise asyncio.CancelledError  # the process dies before the id is stored

        p.client.create_instance = create_then_crash
        with pytest.raises(asyncio.CancelledError):
            await p.create(REQ)
        (pending,) = await p.ledger.list()
        assert pending.state == InstanceState.CREATING and pending.id == ""

        fresh = await w.provider()  # a new process over the same ledger
        report = await fresh.reconcile()
        (live_id,) = w.live()
        assert [i.id for i in report.adopted] == [str(live_id)]
        assert not report.orphans
        adopted = await fresh.ledger.get(str(live_id))
        assert adopted.label == pending.label and adopted.alive
        # nothing untracked: every instance of ours on Vast has a ledger row with its id
        ids = await ledger_ids(fresh)
        for inst in await fresh.list():
            assert ids[inst.label] == inst.id


async def test_lost_instance_destroyed_outside_is_marked_destroyed(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        inst = await p.create(REQ)
        await w.emu.destroy_instance(int(inst.id))
        report = await p.reconcile()
        assert [i.label for i in report.vanished] == [inst.label]
        assert (await p.ledger.get(inst.id)).state == InstanceState.DESTROYED


async def test_orphan_with_our_label_is_recorded_for_cleanup(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        offer = (await p.search(REQ))[0]
        stray = await p.client.create_instance(
            offer.id, {"image": "x", "label": "comfyfleet-t-stray", "disk": 20}
        )
        foreign = (await p.search(REQ))[0]
        await p.client.create_instance(foreign.id, {"image": "x", "label": "someone-else", "disk": 20})
        report = await p.reconcile()
        assert [i.id for i in report.orphans] == [str(stray)]
        row = await p.ledger.get(str(stray))
        assert row.meta["orphan"] is True and row.state == InstanceState.FAILED
        assert [i.id for i in await p.list()] == [str(stray)]  # only ours


async def test_instance_stuck_in_loading_fails_at_the_deadline(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.next_instance_faults = ["stuck_loading"]
        inst = await p.create(REQ)
        t0 = time.monotonic()
        with pytest.raises(InstanceFailed, match="deadline") as info:
            await p.wait_ready(inst, time.monotonic() + 0.4)
        assert 0.35 < time.monotonic() - t0 < 5.0
        assert info.value.status == "loading"
        assert "Pull" in (inst.status_msg or "") or "Download" in (inst.status_msg or "")  # pull progress


@pytest.mark.parametrize(
    ("fault", "statuses"),
    [("exited", {"exited"}), ("offline", {"unknown", "offline"}), ("oci_error", {"created"})],
)
async def test_instance_bad_state_fails_fast(tmp_path, fault, statuses):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.next_instance_faults = [fault]
        inst = await p.create(REQ)
        t0 = time.monotonic()
        with pytest.raises(InstanceFailed) as info:
            await p.wait_ready(inst, soon(30))
        assert time.monotonic() - t0 < 5.0  # fast: not the 30 s deadline
        assert info.value.status in statuses and info.value.machine_fault
        assert int(inst.id) in w.live()  # wait_ready never destroys


async def test_instance_goes_offline_after_running(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        inst = await p.acquire(REQ, soon())
        w.emu.inject(int(inst.id), "offline")
        info = await p.client.show_instance(inst.id)
        assert info["actual_status"] in ("unknown", "offline")
        (listed,) = await p.list()
        assert listed.state == InstanceState.FAILED
        report = await p.reconcile()
        assert [i.id for i in report.failed] == [inst.id]
        assert (await p.ledger.get(inst.id)).state == InstanceState.FAILED  # cleanup will destroy it


async def test_host_whose_ssh_never_comes_up(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider(ssh_timeout_s=0.3)
        w.faults.next_instance_faults = ["ssh_never"]
        inst = await p.create(REQ)
        with pytest.raises(InstanceFailed, match="SSH did not answer"):
            await p.wait_ready(inst, soon(30))


async def test_acquire_retries_once_on_a_different_machine(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.next_instance_faults = ["exited"]
        inst = await p.acquire(REQ, soon())
        rows = {r.id: r for r in await p.ledger.list(alive_only=False)}
        (bad,) = [r for r in rows.values() if r.id != inst.id]
        assert bad.state == InstanceState.DESTROYED and bad.meta["machine_fault"] is True
        assert bad.machine_id != inst.machine_id and bad.machine_id in p.bad_machines
        assert list(w.live()) == [int(inst.id)]  # only what the failed attempt created was destroyed
        # a fresh provider remembers the bad machine from the ledger
        fresh = await w.provider()
        assert all(r.machine_id != bad.machine_id for r in await fresh.search(REQ))


async def test_acquire_gives_up_after_the_second_bad_machine(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.next_instance_faults = ["oci_error", "exited"]
        with pytest.raises(InstanceFailed):
            await p.acquire(REQ, soon())
        assert not w.live() and w.creates() == 2
        assert len(p.bad_machines) == 2


async def test_destroy_is_idempotent(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        inst = await p.create(REQ)
        await p.destroy(inst)
        await p.destroy(inst)
        assert not w.live()
        assert (await p.ledger.get(inst.id)).state == InstanceState.DESTROYED
        assert await p.client.show_instance(inst.id) is None


async def test_insufficient_credit_rents_nothing(tmp_path):
    async with world(tmp_path, credit=0.00001) as w:
        p = await w.provider()
        with pytest.raises(InsufficientCredit):
            await p.create(REQ)
        assert not w.live()
        assert [r.state for r in await p.ledger.list(alive_only=False)] == [InstanceState.DESTROYED]


async def test_bad_api_key_is_an_auth_error(tmp_path):
    async with world(tmp_path, bad_key_status=404) as w:
        client = w.client()
        client._http.headers["Authorization"] = "Bearer wrong-key-123"
        with pytest.raises(AuthError):
            await client.list_instances()


async def test_list_pages_through_50_instances_and_never_uses_v0(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        offers = await p.client.search_offers({"limit": 60})
        for o in offers[:50]:
            await p.client.create_instance(o["id"], {"image": "x", "label": f"other-{o['id']}", "disk": 10})
        rows = await p.client.list_instances()
        assert len(rows) == 50 and len({r["id"] for r in rows}) == 50
        assert sum(1 for c in w.emu.calls if c.route == "list") == 2
        assert not [c for c in w.emu.calls if c.route == "list_v0"]


async def test_logs_and_balance(tmp_path):
    async with world(tmp_path, logs_delay_s=0.05) as w:
        p = await w.provider()
        inst = await p.acquire(REQ, soon())
        text = await p.client.request_logs(inst.id, poll_interval_s=0.02, deadline_s=5)
        assert "actual_status" in text
        assert await p.client.balance() > 0


async def test_wait_ready_waits_for_comfyui_when_a_probe_is_given(tmp_path):
    calls: list[str] = []

    async def comfy_probe(instance) -> bool:
        calls.append(instance.id)
        return len(calls) >= 3  # ComfyUI answers on the third try (502 from Caddy before)

    async with world(tmp_path) as w:
        p = await w.provider(comfy_probe=comfy_probe)
        inst = await p.acquire(REQ, soon())
        assert inst.state == InstanceState.PROVISIONING and calls == [inst.id] * 3


async def test_cancelled_acquire_destroys_what_it_rented(tmp_path):
    probing = asyncio.Event()

    async def never(instance) -> bool:
        probing.set()
        return False

    async with world(tmp_path) as w:
        p = await w.provider(ssh_probe=never, ssh_timeout_s=60)
        task = asyncio.create_task(p.acquire(REQ, soon(60)))
        await asyncio.wait_for(probing.wait(), 10)
        assert len(w.live()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not w.live()
        assert [r.state for r in await p.ledger.list(alive_only=False)] == [InstanceState.DESTROYED]


async def test_search_logs_why_the_winner_won(tmp_path, caplog):
    from app.pool.provider import Provider

    caplog.set_level("INFO", logger="app.vast.provider")
    async with world(tmp_path) as w:
        p = await w.provider()
        assert isinstance(p, Provider)
        ranked = await p.search(REQ)
        line = next(r.getMessage() for r in caplog.records if "qualify" in r.getMessage())
        assert f"#1 offer {ranked[0].id}" in line and "#3 offer" in line and "/clip" in line


async def test_no_credit_left_refuses_before_any_create(tmp_path):
    async with world(tmp_path, credit=0.0) as w:
        p = await w.provider()
        with pytest.raises(InsufficientCredit, match="add credit"):
            await p.create(REQ)
        assert w.creates() == 0 and not await p.ledger.list(alive_only=False)


async def test_bad_machine_is_remembered_by_wait_ready_for_any_caller(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.next_instance_faults = ["exited"]
        inst = await p.create(REQ)
        with pytest.raises(InstanceFailed):
            await p.wait_ready(inst, soon())
        row = await p.ledger.get(inst.id)
        assert row.state == InstanceState.FAILED and row.meta["machine_fault"] is True
        assert inst.machine_id in p.bad_machines
        assert all(r.machine_id != inst.machine_id for r in await p.search(REQ))


async def test_lost_instance_is_adopted_by_list_so_cleanup_sees_no_orphan(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        real_create = p.client.create_instance

        async def create_then_crash(offer_id, body):
            await real_create(offer_id, body)
            raise asyncio.CancelledError

        p.client.create_instance = create_then_crash
        with pytest.raises(asyncio.CancelledError):
            await p.create(REQ)
        fresh = await w.provider()
        (listed,) = await fresh.list()
        assert (await fresh.ledger.get(listed.id)).label == listed.label  # what cleanup checks


async def test_vast_published_rate_limits_are_absorbed(tmp_path):
    async with world(tmp_path, rate_limits=True) as w:
        client = w.client(backoff_initial_s=0.2, backoff_max_s=1.0, retry_deadline_s=20)
        p = await w.provider(client=client)
        inst = await p.acquire(REQ, soon(30))
        await p.destroy(inst)
        limited = [c for c in w.emu.calls if c.status == 429]
        assert w.creates() - sum(1 for c in limited if c.route == "create") == 1
        assert not w.live()


async def test_null_show_right_after_create_is_not_taken_as_gone(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.null_shows_after_create = 3
        inst = await p.acquire(REQ, soon())
        assert inst.state == InstanceState.PROVISIONING and w.creates() == 1


async def test_instance_that_stays_null_fails_after_the_grace(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider(null_grace_s=0.2)
        w.faults.null_shows_after_create = 10_000
        inst = await p.create(REQ)
        with pytest.raises(InstanceFailed, match="no longer exists") as info:
            await p.wait_ready(inst, soon())
        assert info.value.machine_fault is False


@pytest.mark.parametrize("shape", ["text", "detail", "json"])
async def test_rate_limit_burst_in_every_body_shape(tmp_path, shape):
    async with world(tmp_path) as w:
        p = await w.provider()
        w.faults.rate_limit_burst, w.faults.rate_limit_body = 3, shape
        ranked = await p.search(REQ)
        assert ranked
        assert sum(1 for c in w.emu.calls if c.status == 429) == 3


async def test_concurrent_creates_rent_distinct_offers_and_register_the_key_once(tmp_path):
    async with world(tmp_path) as w:
        p = await w.provider()
        a, b, c = await asyncio.gather(*(p.create(REQ) for _ in range(3)))
        assert len({a.offer_id, b.offer_id, c.offer_id}) == 3 and len(w.live()) == 3
        assert len(w.emu.account_keys) == 1
        assert len({i.label for i in (a, b, c)}) == 3


async def test_lost_instance_given_up_then_seen_by_list_is_marked_for_cleanup(tmp_path):
    # An ambiguous create whose label lookup found nothing closes its row (DESTROYED); should the
    # instance show up after all, list() (what the in-process cleanup runs) must mark it FAILED so it is
    # destroyed now, not revive it as a BOOTING instance nobody waits for (billing until the deadline).
    async with world(tmp_path) as w:
        p = await w.provider()
        real_create = p.client.create_instance

        async def create_then_crash(offer_id, body):
            await real_create(offer_id, body)
            raise asyncio.CancelledError

        p.client.create_instance = create_then_crash
        with pytest.raises(asyncio.CancelledError):
            await p.create(REQ)
        (pending,) = await p.ledger.list()
        await p.ledger.mark_destroyed(pending.label, reason="create failed; label not found on Vast")
        fresh = await w.provider()
        (listed,) = await fresh.list()
        row = await fresh.ledger.get(listed.id)
        assert row.label == pending.label and row.state == InstanceState.FAILED
        assert row.alive and row.destroyed_at is None


async def test_lost_instance_of_an_unresolved_create_is_destroyed_by_cleanup(tmp_path):
    # Create timed out and every label lookup failed: the GPU may bill, and nobody waits for it.
    # Cleanup's destroy of the ledger row must find it by label and destroy it (not wait 90 minutes).
    async with world(tmp_path) as w:
        p = await w.provider(
            client=w.client(timeout=0.5, retry_deadline_s=0.2, max_attempts=2), ambiguous_lookups=2
        )
        w.faults.create_timeouts, w.faults.create_timeout_s = 1, 3.0
        w.faults.server_errors, w.faults.server_error_route = 100, "list"
        with pytest.raises(CreateAmbiguous):
            await p.create(REQ)
        w.faults.server_errors = 0
        await asyncio.sleep(3.0)  # the emulator's slow create lands
        assert len(w.live()) == 1
        fresh = await w.provider()
        for row in await fresh.ledger.list():  # what cleanup does with FAILED rows
            if row.state == InstanceState.FAILED:
                await fresh.destroy(row)
        assert list(w.live()) == []


async def test_lost_instance_when_the_ledger_write_after_create_fails(tmp_path):
    # The GPU is rented and its label row exists; a failed write of the id (database locked) must not turn
    # into an exception that makes the caller forget the instance (and rent another one).
    async with world(tmp_path) as w:
        p = await w.provider()
        real_update = p.ledger.update
        failed = []

        async def flaky_update(inst):
            if inst.id and not failed:
                failed.append(inst.id)
                raise RuntimeError("database is locked")
            await real_update(inst)

        p.ledger.update = flaky_update
        inst = await p.create(REQ)
        assert failed == [inst.id] and list(w.live()) == [int(inst.id)]
        await p.wait_ready(inst, soon())
        assert (await p.ledger.get(inst.id)).label == inst.label
