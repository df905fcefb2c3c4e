"""The provider ranks the Vast market with what finished jobs measured (app.pool.hosts): a host measured
slow is not rented again, and a measured fast one moves up, against the emulator's market."""

from __future__ import annotations

from app.pool.hosts import HostBook, HostSample
from app.pool.provider import CreateRequest
from tests.vast.simworld import world

REQUEST = CreateRequest(workflow="wan", disk_gb=41.0, min_gpu_ram_gb=24.0)


def sample(machine: str, gpu: str | None, s_per_step: float) -> HostSample:
    return HostSample(machine, gpu, gpu_s=4 * s_per_step, steps=4, frames=81, megapixels=0.4)


async def test_slow_host_is_not_rented_again(tmp_path):
    async with world(tmp_path) as w:
        provider = await w.provider()
        provider.hosts = HostBook(None)
        first = (await provider.search(REQUEST))[0]
        gpu = first.offer.get("gpu_name")
        for s in (sample("peer-1", gpu, 1.0), sample("peer-2", gpu, 1.0), sample(first.machine_id, gpu, 3.0)):
            await provider.hosts.record(s)
        ranked = await provider.search(REQUEST)
        assert first.machine_id not in {r.machine_id for r in ranked}
        assert provider.last_search["rejected"].get("machine", 0) >= 1  # "machine failed before / slow"
        inst = await provider.create(REQUEST)
        assert inst.machine_id != first.machine_id


async def test_slow_host_measured_fast_machine_moves_up(tmp_path):
    async with world(tmp_path) as w:
        provider = await w.provider()
        provider.hosts = HostBook(None)
        static = await provider.search(REQUEST)
        second = static[1]
        gpu = second.offer.get("gpu_name")
        # that machine measured 4x faster than its GPU model's other machines
        for s in (
            sample("peer-1", gpu, 4.0),
            sample("peer-2", gpu, 4.0),
            sample(second.machine_id, gpu, 1.0),
        ):
            await provider.hosts.record(s)
        learnt = await provider.search(REQUEST)
        assert learnt[0].machine_id == second.machine_id
        assert learnt[0].speed > second.speed
