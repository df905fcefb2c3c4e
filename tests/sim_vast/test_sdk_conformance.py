"""Vast's own SDK (`vastai==1.9.1`) against the emulator: proof that the emulator speaks the real dialect.

The SDK is synchronous (requests); it runs in a worker thread while the emulator serves on the test loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.sim.vast import VastEmulator, default_market
from tests.sim_vast.conftest import API_KEY, IMAGE

vastai = pytest.importorskip("vastai", reason="conformance needs the vastai SDK (pip install vastai==1.9.1)")
requests = pytest.importorskip("requests")

QUERY = "gpu_ram>=24 reliability>0.98 num_gpus=1"


@pytest.fixture
async def sdk_emu() -> AsyncIterator[VastEmulator]:
    emu = VastEmulator(default_market(200, seed=0), api_key=API_KEY, time_scale=0.0)
    await emu.start()
    yield emu
    await emu.stop()


def _sdk(emu: VastEmulator, retry: int = 1):
    return vastai.VastAI(api_key=API_KEY, server_url=emu.url, retry=retry)


async def test_sdk_search_create_show_list_destroy(sdk_emu: VastEmulator) -> None:
    def scenario() -> dict:
        sdk = _sdk(sdk_emu)
        offers = sdk.search_offers(QUERY, order="dph_total", limit=40)
        created = [
            sdk.create_instance(
                o["id"],
                image=IMAGE,
                disk=40,
                label=f"sdk-{i}",
                ssh=True,
                direct=True,
                env={"-p 8188:8188": "1"},
            )
            for i, o in enumerate(offers[:27])
        ]
        first = created[0]["new_contract"]
        shown = sdk.show_instance(first)
        listed = sdk.show_instances()
        destroyed = sdk.destroy_instance(first)
        after = sdk.show_instance(first)
        return {
            "offers": offers,
            "created": created,
            "shown": shown,
            "listed": listed,
            "d": destroyed,
            "a": after,
        }

    out = await asyncio.to_thread(scenario)
    offers = out["offers"]
    assert len(offers) == 40
    assert all(o["gpu_ram"] >= 24000 and o["reliability"] > 0.98 and o["num_gpus"] == 1 for o in offers)
    assert all(
        o["verification"] == "verified" and "datacenter" in o for o in offers
    )  # SDK defaults + postprocess
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)
    assert all(c["success"] is True and isinstance(c["new_contract"], int) for c in out["created"])
    shown = out["shown"]
    assert shown["id"] == out["created"][0]["new_contract"] and shown["actual_status"] == "running"
    assert shown["extra_env"] == {"-p 8188:8188": "1"}  # the SDK turned the pairs into a dict
    assert shown["image_runtype"] == "ssh ssh_direc ssh_proxy"
    assert "8188/tcp" in shown["ports"] and "22/tcp" in shown["ports"]
    assert len(out["listed"]) == 27  # paged: 25 + 2
    assert sorted(i["label"] for i in out["listed"]) == sorted(f"sdk-{i}" for i in range(27))
    assert out["d"]["success"] is True
    assert out["a"] is None
    assert sum(1 for c in sdk_emu.calls if c.route == "list") == 2


async def test_sdk_account_keys_logs_and_manage(sdk_emu: VastEmulator) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISDK sdk@test"

    def scenario() -> dict:
        sdk = _sdk(sdk_emu)
        offer = sdk.search_offers("num_gpus=1 direct_port_count>0", type="interruptible", order="dph_total")[
            0
        ]
        sdk.create_ssh_key(key)
        created = sdk.create_instance(
            offer["id"], image=IMAGE, disk=20, bid_price=offer["min_bid"] * 1.2, ssh=True
        )
        iid = created["new_contract"]
        return {
            "offer": offer,
            "keys": sdk.show_ssh_keys(),
            "user": sdk.show_user(),
            "attach": sdk.attach_ssh(iid, key),
            "label": sdk.label_instance(iid, "relabelled"),
            "stop": sdk.stop_instance(iid),
            "stopped": sdk.show_instance(iid),
            "start": sdk.start_instance(iid),
            "logs": sdk.logs(iid, tail="50"),
        }

    out = await asyncio.to_thread(scenario)
    assert out["offer"]["is_bid"] is True
    assert any(k.get("key") == key or k.get("public_key") == key for k in out["keys"])
    assert out["user"]["credit"] <= 100.0 and "api_key" not in out["user"]  # the SDK pops the key
    assert out["attach"]["success"] and out["label"]["success"] and out["stop"]["success"]
    assert out["stopped"]["label"] == "relabelled" and out["stopped"]["intended_status"] == "stopped"
    assert out["stopped"]["is_bid"] is True
    assert out["start"]["success"] is True
    assert isinstance(out["logs"], str) and "created from offer" in out["logs"]


async def test_sdk_sees_no_such_ask_as_http_error_with_body(sdk_emu: VastEmulator) -> None:
    def scenario() -> requests.HTTPError:
        try:
            _sdk(sdk_emu).create_instance(1, image=IMAGE)
        except requests.HTTPError as exc:
            return exc
        raise AssertionError("create of a missing offer succeeded")

    exc = await asyncio.to_thread(scenario)
    assert exc.response.status_code == 404
    assert "no_such_ask" in exc.response.json()["msg"]


async def test_sdk_retries_a_rate_limited_call(sdk_emu: VastEmulator) -> None:
    sdk_emu.faults.rate_limit_burst = 1
    sdk_emu.faults.rate_limit_retry_after = 0.05
    offers = await asyncio.to_thread(lambda: _sdk(sdk_emu, retry=2).search_offers(QUERY, limit=3))
    assert len(offers) == 3
    assert [c.status for c in sdk_emu.calls] == [429, 200]
