"""`comfyfleet instances ...` through typer's CliRunner, against the emulator running in a thread."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.sim.vast import VastEmulator, default_market
from tests.vast.simworld import API_KEY, BannerBackend

runner = CliRunner()


class ThreadedEmulator:
    """The emulator in its own event loop (the CLI runs `asyncio.run` itself)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backend = BannerBackend()
        self.emu = VastEmulator(
            default_market(60, seed=2),
            api_key=API_KEY,
            time_scale=0.0,
            backend=self.backend,
            logs_delay_s=0.0,
        )
        self.url = self.run(self.emu.start("127.0.0.1", 0))

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.emu.stop())
        self.run(self.backend.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@pytest.fixture
def sim(monkeypatch):
    emu = ThreadedEmulator()
    monkeypatch.setenv("VAST_API_URL", emu.url)
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    monkeypatch.setenv("DEPLOYMENT", "cli")
    monkeypatch.setenv("VAST_MIN_RELIABILITY", "0.9")
    monkeypatch.setenv("VAST_MIN_INET_DOWN_MBPS", "100")
    monkeypatch.setenv("VAST_MAX_PRICE_PER_HOUR", "5")
    from app.config import get_settings

    get_settings.cache_clear()
    yield emu
    emu.close()


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(cli, ["instances", *args], input=input)
    return result


def test_no_key_configured_prints_a_clear_message():
    result = invoke("list")
    assert result.exit_code != 0
    assert "VAST_API_KEY" in str(result.exception) + result.output


def test_offers_explains_the_ranking(sim):
    result = invoke("offers", "--json", "--limit", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    costs = [o["cost_per_clip_usd"] for o in data["offers"]]
    assert len(costs) == 3 and costs == sorted(costs)
    human = invoke("offers", "--limit", "2")
    assert human.exit_code == 0 and "why: #1 offer" in human.output and "/clip" in human.output
    assert "qualify; rejected by" in human.output and data["search"]["returned"] >= 3


def test_create_list_ssh_logs_destroy(sim):
    created = invoke("create", "--yes", "--json")
    assert created.exit_code == 0, created.output
    inst = json.loads(created.output)
    assert inst["state"] == "provisioning" and inst["label"].startswith("comfyfleet-cli-")

    listed = invoke("list", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    (row,) = data["instances"]
    assert row["id"] == inst["id"] and row["spent_usd"] >= 0 and row["price_per_hour"] > 0
    token = sim.emu.instances[int(inst["id"])].env["WEB_PASSWORD"]
    assert token not in listed.output and token not in created.output
    human = invoke("list")
    assert inst["id"] in human.output and token not in human.output

    ssh = invoke("ssh", inst["id"])
    assert ssh.exit_code == 0 and ssh.output.startswith("ssh -i ")
    assert "-L 18188:127.0.0.1:18188" in ssh.output and "root@127.0.0.1" in ssh.output

    logs = invoke("logs", inst["id"])
    assert logs.exit_code == 0 and "actual_status" in logs.output

    declined = invoke("destroy", inst["id"], input="n\n")
    assert declined.exit_code == 1 and int(inst["id"]) in sim.emu.instances

    gone = invoke("destroy", inst["id"], "--yes")
    assert gone.exit_code == 0, gone.output
    assert int(inst["id"]) not in sim.emu.instances


def test_destroy_all_ours_leaves_other_instances_alone(sim):
    for _ in range(2):
        assert invoke("create", "--yes", "--no-wait").exit_code == 0
    offers = [
        o
        for o in default_market(60, seed=2)
        if o["id"] not in {i.offer_id for i in sim.emu.instances.values()}
    ]
    foreign = sim.run(_create_foreign(sim.url, offers[0]["id"]))
    result = invoke("destroy", "--all-ours", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["destroyed"]) == 2
    assert list(sim.emu.instances) == [foreign]
    refused = invoke("destroy", str(foreign), "--yes")
    assert refused.exit_code != 0 and foreign in sim.emu.instances


async def _create_foreign(url: str, offer_id: int) -> int:
    from app.vast.client import VastClient

    async with VastClient(url, API_KEY) as client:
        return await client.create_instance(offer_id, {"image": "x", "label": "not-ours", "disk": 10})
