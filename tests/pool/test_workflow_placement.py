"""Provisioning per workflow (issue 11): an instance records the workflows it holds; a job goes to an
instance that holds its workflow's models; a workflow is provisioned onto an instance only when its disk
has room; POOL_WORKFLOWS sizes new instances' disks for all of them and is provisioned onto idle ones."""

from __future__ import annotations

import asyncio

from app.workflows.model import ModelFile
from tests.jobs.fakes import FakeComfy, FakePreparer, FakeProvider, FakeWorkflow, workflow_loader
from tests.jobs.harness import world

GB = 1_000_000_000


class SizedWorkflow(FakeWorkflow):
    def __init__(self, name: str, files: list[tuple[str, int]]) -> None:
        super().__init__(name, disk_bytes=sum(s for _, s in files))
        self.models = [ModelFile(name=f, folder="m", url=f"https://x/{f}", size=s) for f, s in files]


A = SizedWorkflow("wf_a", [("shared.bin", 6 * GB), ("a.bin", 10 * GB)])
B = SizedWorkflow("wf_b", [("shared.bin", 6 * GB), ("b.bin", 10 * GB)])


class RecordingProvider(FakeProvider):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.requests = []

    async def create(self, request):
        self.requests.append(request)
        return await super().create(request)


async def _eventually(check, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_instance_records_its_workflows_and_takes_another_when_disk_has_room(tmp_path):
    provider = RecordingProvider()
    # disk = wf_a's 16 GB + 5 GB headroom = 21 GB; wf_b would add its own 10 GB (the shared file is
    # counted once): 26 + 5 > 21, so wf_b does not fit on that disk
    async with world(
        tmp_path,
        provider=provider,
        workflows=workflow_loader(A, B),
        vast_disk_headroom_gb=5.0,
        pool_max_instances=3,
        comfy=FakeComfy(step_delay=0.01),
    ) as w:
        a = await w.wait((await w.submit(workflow="wf_a", seed=1)).id)
        assert a.state == "succeeded"
        member = w.services.pool.members[a.instance_id]
        assert member.instance.meta["workflows"] == ["wf_a"]
        assert provider.requests[0].disk_gb == 21.0
        b = await w.wait((await w.submit(workflow="wf_b", seed=2)).id)
        assert b.state == "succeeded"
        assert b.instance_id != a.instance_id  # no room for wf_b on the first disk: another instance
        again = await w.wait((await w.submit(workflow="wf_a", seed=3)).id)
        assert again.instance_id == a.instance_id  # back to the instance that holds wf_a's models


async def test_workflow_added_to_an_instance_whose_disk_has_room(tmp_path):
    provider = RecordingProvider()
    async with world(
        tmp_path,
        provider=provider,
        workflows=workflow_loader(A, B),
        vast_disk_headroom_gb=15.0,
        pool_max_instances=3,
        comfy=FakeComfy(step_delay=0.01),
    ) as w:
        a = await w.wait((await w.submit(workflow="wf_a", seed=1)).id)
        b = await w.wait((await w.submit(workflow="wf_b", seed=2)).id)
        # disk 31 GB: wf_a 16 GB + wf_b's own 10 GB = 26 GB, + 15 GB headroom = 41 > 31: no room either
        assert b.instance_id != a.instance_id
    provider = RecordingProvider()
    async with world(
        tmp_path / "2",
        provider=provider,
        workflows=workflow_loader(A, B),
        vast_disk_headroom_gb=15.0,
        pool_workflows="wf_b",
        pool_max_instances=3,
        comfy=FakeComfy(step_delay=0.01),
    ) as w:
        # POOL_WORKFLOWS: the disk is sized for wf_a + wf_b (shared file once) + headroom
        a = await w.wait((await w.submit(workflow="wf_a", seed=1)).id)
        assert provider.requests[0].disk_gb == 26 + 15
        member = w.services.pool.members[a.instance_id]
        # idle after the job: wf_b is provisioned onto it in the background
        await _eventually(lambda: "wf_b" in member.prepared)
        assert member.instance.meta["workflows"] == ["wf_a", "wf_b"]
        b = await w.wait((await w.submit(workflow="wf_b", seed=2)).id)
        assert b.instance_id == a.instance_id and len(provider.created) == 1
        assert (a.instance_id, "wf_b") in w.preparer.calls


async def test_idle_provisioning_skips_a_workflow_without_room(tmp_path):
    preparer = FakePreparer()
    big = SizedWorkflow("wf_big", [("huge.bin", 500 * GB)])
    async with world(
        tmp_path,
        preparer=preparer,
        workflows=workflow_loader(A, big),
        vast_disk_headroom_gb=5.0,
        comfy=FakeComfy(step_delay=0.01),
    ) as w:
        w.services.settings.pool_workflows = ""  # the disk is not sized for it...
        w.services.pool._pool_workflows = lambda: [big]  # ...but it is asked for anyway
        a = await w.wait((await w.submit(workflow="wf_a", seed=1)).id)
        member = w.services.pool.members[a.instance_id]
        assert not w.services.pool.has_room(member, big)
        await asyncio.sleep(0)  # a provisioning task would have been created synchronously on release
        assert not w.services.pool._background
        assert [c for c in preparer.calls if c[1] == "wf_big"] == []


async def test_at_max_an_idle_instance_without_room_makes_way(tmp_path):
    provider = RecordingProvider()
    async with world(
        tmp_path,
        provider=provider,
        workflows=workflow_loader(A, B),
        vast_disk_headroom_gb=5.0,
        pool_max_instances=1,
        comfy=FakeComfy(step_delay=0.01),
    ) as w:
        a = await w.wait((await w.submit(workflow="wf_a", seed=1)).id)
        b = await w.wait((await w.submit(workflow="wf_b", seed=2)).id, seconds=10)
        assert (a.state, b.state) == ("succeeded", "succeeded")
        assert b.instance_id != a.instance_id and provider.destroyed == [a.instance_id]
