import asyncio
import json
import socket
import time

import pytest
from aiohttp import web

from app.intake import ImageIntake
from app.jobs.webhooks import sign, verify
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="


async def _wait_job(w, job_id: str, pred, within_s: float = 30.0) -> None:
    """Until `pred(job)` holds, or `within_s` passed (the test's assertions then say what is wrong): a
    condition with a generous deadline, not a count of short sleeps that a loaded machine runs out of."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pred(await w.services.repo.require(job_id)):
            return
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, port: int, status: int = 200) -> None:
        self.port, self.status = port, status
        self.received: list[tuple[dict, bytes]] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def loopback_intake(tmp_path):
    return ImageIntake(tmp_path / "data" / "inputs", max_bytes=10**7, max_pixels=10**8, allow_loopback=True)


def test_signature_is_standard_webhooks_v1():
    body = b'{"a":1}'
    sig = sign(SECRET, "msg_1", 1700000000, body)
    # reference value computed independently: HMAC-SHA256(base64decode(secret), "msg_1.1700000000.{body}")
    import base64
    import hashlib
    import hmac

    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert sig == "v1," + expected


async def test_webhook_is_signed_and_delivered_on_completion(tmp_path):
    rx = Receiver(free_port())
    await rx.start()
    try:
        async with world(tmp_path, webhook_secret=SECRET, intake=loopback_intake(tmp_path)) as w:
            job = await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")
            await w.wait(job.id)
            await _wait_job(w, job.id, lambda j: j.webhook_status == "delivered")
            job = await w.services.repo.require(job.id)
            assert job.webhook_status == "delivered" and job.webhook_attempts == 1
        [(headers, body)] = rx.received
        assert verify(SECRET, headers, body)
        assert not verify("whsec_" + "b3RoZXI=", headers, body)
        payload = json.loads(body)
        assert payload["type"] == "job.succeeded" and payload["data"]["job_id"] == job.id
        assert payload["data"]["result"]["video_url"]
    finally:
        await rx.stop()


async def test_webhook_receiver_down_then_up_is_retried_until_delivered(tmp_path):
    port = free_port()
    rx = Receiver(port)
    try:
        async with world(
            tmp_path, webhook_secret=SECRET, intake=loopback_intake(tmp_path), webhook_backoff_s=(0.2,)
        ) as w:
            w.services.webhooks.poll_interval_s = 0.05
            job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{port}/hook")).id)
            await _wait_job(w, job.id, lambda j: j.webhook_attempts >= 2)
            down = await w.services.repo.require(job.id)
            assert down.webhook_status == "pending" and down.webhook_last_error
            await rx.start()
            await _wait_job(w, job.id, lambda j: j.webhook_status == "delivered")
            up = await w.services.repo.require(job.id)
            assert up.webhook_status == "delivered" and up.webhook_attempts >= 3
            assert len(rx.received) == 1
            assert len({h["webhook-id"] for h, _ in rx.received}) == 1
    finally:
        await rx.stop()


async def test_webhook_delivery_continues_after_restart(tmp_path):
    port = free_port()
    async with world(
        tmp_path, webhook_secret=SECRET, intake=loopback_intake(tmp_path), webhook_backoff_s=(0.1,)
    ) as w:
        w.services.webhooks.poll_interval_s = 0.05
        job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{port}/hook")).id)
        await _wait_job(w, job.id, lambda j: j.webhook_attempts >= 1)
    rx = Receiver(port)
    await rx.start()
    try:
        async with world(
            tmp_path, webhook_secret=SECRET, intake=loopback_intake(tmp_path), start=False
        ) as w2:
            w2.services.webhooks.poll_interval_s = 0.05
            await w2.services.start()
            await _wait_job(w2, job.id, lambda j: j.webhook_status == "delivered")
            assert (await w2.services.repo.require(job.id)).webhook_status == "delivered"
    finally:
        await rx.stop()


async def test_failing_receiver_gives_up_after_max_attempts_and_never_blocks_jobs(tmp_path):
    rx = Receiver(free_port(), status=500)
    await rx.start()
    try:
        async with world(tmp_path, intake=loopback_intake(tmp_path), webhook_backoff_s=(0.01,)) as w:
            w.services.webhooks.poll_interval_s = 0.02
            w.services.webhooks.max_attempts = 3
            job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")).id)
            other = await w.wait((await w.submit(seed=2)).id)
            assert other.state == "succeeded"
            await _wait_job(w, job.id, lambda j: j.webhook_status == "failed")
            job = await w.services.repo.require(job.id)
            assert job.webhook_status == "failed" and job.webhook_attempts == 3
            assert "HTTP 500" in job.webhook_last_error
    finally:
        await rx.stop()


async def test_webhook_to_private_address_is_refused_at_submit(tmp_path):
    from app.errors import ValidationError

    async with world(tmp_path) as w:
        try:
            await w.submit(webhook_url="http://169.254.169.254/latest/meta-data")
        except ValidationError as exc:
            assert exc.field == "webhook_url" and "metadata" in exc.reason
        else:
            raise AssertionError("expected the webhook URL to be refused")
        assert await w.services.repo.list() == []
        inputs = w.settings.data_dir / "inputs"
        assert [p for p in inputs.rglob("*") if p.is_file()] == []


async def test_webhook_host_that_turns_private_after_submit_is_not_called(tmp_path):
    answers = {"hooks.example.com": ["127.0.0.1"]}

    async def resolver(host, port):
        return answers[host]

    rx = Receiver(free_port())
    await rx.start()
    intake = ImageIntake(
        tmp_path / "data" / "inputs",
        max_bytes=10**7,
        max_pixels=10**8,
        allow_loopback=True,
        resolver=resolver,
    )
    try:
        async with world(tmp_path, intake=intake, webhook_backoff_s=(0.05,)) as w:
            w.services.webhooks.poll_interval_s = 0.02
            w.services.manager.spawn = lambda *a, **k: None
            job = await w.submit(seed=1, webhook_url=f"http://hooks.example.com:{rx.port}/hook")
            answers["hooks.example.com"] = ["10.0.0.7"]  # DNS rebinding after the check at submit
            await w.services.runner.run(job.id)
            await _wait_job(w, job.id, lambda j: j.webhook_attempts >= 1)
            job = await w.services.repo.require(job.id)
            assert job.webhook_status == "pending" and "private address" in job.webhook_last_error
            assert rx.received == []
            answers["hooks.example.com"] = ["127.0.0.1"]
            await _wait_job(w, job.id, lambda j: j.webhook_status == "delivered")
            assert len(rx.received) == 1 and rx.received[0][0]["Host"] == f"hooks.example.com:{rx.port}"
    finally:
        await rx.stop()


async def _wait_webhook_status(w, job_id: str, *wanted: str) -> str | None:
    await _wait_job(w, job_id, lambda j: j.webhook_status in wanted)
    return (await w.services.repo.require(job_id)).webhook_status


async def test_job_failed_by_restart_recovery_still_sends_its_webhook(tmp_path):
    rx = Receiver(free_port())
    await rx.start()
    try:
        async with world(tmp_path, intake=loopback_intake(tmp_path), start=False) as w:
            w.services.webhooks.poll_interval_s = 0.02
            w.services.manager.spawn = lambda *a, **k: None
            job = await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")
            for st in ("acquiring", "running"):
                await w.services.repo.transition(job.id, st)
            await w.services.repo.set_fields(job.id, attempts=1)
            await w.services.start()  # recovery fails the job: lost on restart, already retried
            assert (await w.services.repo.require(job.id)).state == "failed"
            assert await _wait_webhook_status(w, job.id, "delivered") == "delivered"
        [(_headers, body)] = rx.received
        assert json.loads(body)["type"] == "job.failed"
    finally:
        await rx.stop()


async def test_cancel_of_a_job_without_a_task_sends_its_webhook(tmp_path):
    rx = Receiver(free_port())
    await rx.start()
    try:
        async with world(tmp_path, intake=loopback_intake(tmp_path)) as w:
            w.services.webhooks.poll_interval_s = 0.02
            w.services.manager.spawn = lambda *a, **k: None  # e.g. a job of another process
            job = await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")
            done = await w.services.manager.cancel(job.id)
            assert done.state == "cancelled"
            assert await _wait_webhook_status(w, job.id, "delivered") == "delivered"
        [(_headers, body)] = rx.received
        assert json.loads(body)["type"] == "job.cancelled"
    finally:
        await rx.stop()


async def test_webhook_lost_between_job_end_and_enqueue_is_sent_after_restart(tmp_path):
    rx = Receiver(free_port())
    await rx.start()
    try:
        async with world(tmp_path, intake=loopback_intake(tmp_path)) as w:
            w.services.runner.on_finished = None  # the process dies right after the terminal commit
            job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")).id)
            assert job.state == "succeeded"
            assert (await w.services.repo.require(job.id)).webhook_status is None
        async with world(tmp_path, intake=loopback_intake(tmp_path), start=False) as w2:
            w2.services.webhooks.poll_interval_s = 0.02
            await w2.services.start()
            assert await _wait_webhook_status(w2, job.id, "delivered") == "delivered"
        assert len(rx.received) == 1
    finally:
        await rx.stop()


async def test_receiver_answering_2xx_with_an_endless_body_counts_as_delivered(tmp_path):
    port = free_port()

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        try:
            for _ in range(1000):  # a body that never ends: must not be read into memory nor awaited
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        except (ConnectionError, RuntimeError):
            pass  # the sender hung up after the status line, as it should
        return resp

    app = web.Application()
    app.router.add_post("/hook", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with world(tmp_path, intake=loopback_intake(tmp_path), start=False) as w:
            w.services.webhooks.timeout_s = 1.0
            w.services.webhooks.poll_interval_s = 0.02
            await w.services.start()
            job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{port}/hook")).id)
            status = await _wait_webhook_status(w, job.id, "delivered")
            job = await w.services.repo.require(job.id)
            assert status == "delivered", job.webhook_last_error
            assert job.webhook_attempts == 1
    finally:
        await runner.cleanup()


async def test_webhook_retried_later_carries_fresh_result_urls(tmp_path):
    rx = Receiver(free_port())
    await rx.start()
    try:
        async with world(tmp_path, intake=loopback_intake(tmp_path), start=False) as w:
            w.services.runner.on_finished = None  # deliver by hand below
            await w.services.start()
            job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")).id)

            async def fresh_url(key: str) -> str:  # presigned URLs made at the end have expired
                return f"http://fresh.test/{key}"

            w.store.url = fresh_url
            assert await w.services.webhooks.deliver(job)
        [(_headers, body)] = rx.received
        result = json.loads(body)["data"]["result"]
        assert result["video_url"].startswith("http://fresh.test/")
        assert result["last_frame_url"].startswith("http://fresh.test/")
    finally:
        await rx.stop()


class _SlowScans:
    """The job repo, but a scan that reads a webhook while its delivery is in flight returns only after
    that delivery ended: the read predates the delivery's record, as a slow query on a loaded machine does."""

    def __init__(self, repo, sender) -> None:
        self._repo, self._sender = repo, sender
        self.read_during_delivery = asyncio.Event()
        self.scans = 0

    def __getattr__(self, name):
        return getattr(self._repo, name)

    async def webhooks_due(self, now):
        self.scans += 1
        rows = await self._repo.webhooks_due(now)
        delivering = [self._sender._inflight[r.id] for r in rows if r.id in self._sender._inflight]
        if delivering:
            self.read_during_delivery.set()
            await asyncio.wait(delivering)
        return rows


async def test_webhook_read_by_a_scan_before_its_delivery_ended_is_not_sent_twice(tmp_path):
    """The cause of `..._retried_until_delivered[postgresql]` receiving two POSTs: a scan's stale row."""
    scans: list[_SlowScans] = []

    async def handle(request: web.Request) -> web.Response:
        await asyncio.wait_for(scans[0].read_during_delivery.wait(), 10)  # a scan reads meanwhile
        rx.received.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    rx = Receiver(free_port())
    rx.handle = handle
    await rx.start()
    try:
        async with world(tmp_path, webhook_secret=SECRET, intake=loopback_intake(tmp_path)) as w:
            sender = w.services.webhooks
            sender.poll_interval_s = 0.01
            scans.append(_SlowScans(sender.repo, sender))
            sender.repo = scans[0]
            job = await w.wait((await w.submit(seed=1, webhook_url=f"http://127.0.0.1:{rx.port}/hook")).id)
            await _wait_job(w, job.id, lambda j: j.webhook_status == "delivered")
            assert scans[0].read_during_delivery.is_set()
            # five more scans, each free to start the stale delivery again
            seen = scans[0].scans
            deadline = time.monotonic() + 10
            while scans[0].scans < seen + 5 and time.monotonic() < deadline:
                sender.wake()
                await asyncio.sleep(0.01)
            assert scans[0].scans >= seen + 5 and not sender._inflight
        assert len(rx.received) == 1, [h["webhook-id"] for h, _ in rx.received]
    finally:
        await rx.stop()
