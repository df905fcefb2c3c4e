"""API fuzzing with Schemathesis against a live server (uvicorn on loopback) and its own OpenAPI schema.

Every operation in the schema, whatever routes exist, gets: the schema's own examples, then requests that
fit the schema (positive) and requests that do not (negative). For each one:
- Schemathesis' checks: no 5xx, the status code, content type, headers and body are what the schema
  documents, negative data is rejected, and auth is really enforced;
- no job is created unless the request was accepted: the job ids in the database after the call, minus
  those before, must be exactly ones the (2xx) response reported, and none after a 4xx. Jobs a group makes
  later on its own (a story's segments, created one after another after its 202) count only when their
  group (`story_id` / `batch_id` in the job's request) was reported by an earlier 2xx response; and a
  group row (story, batch) appears only when a 2xx response reports it.

Bounded and repeatable: a fixed number of examples per operation and mode, derandomized Hypothesis (the same
inputs every run), no example database, no shrinking. The world is the jobs harness (fake GPU side), so an
accepted job really runs; image URLs never leave the machine (every host name "does not resolve").
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from sqlalchemy import select

from app.api.app import create_app
from app.intake import ImageIntake
from app.jobs.groups import Batch, Story
from app.jobs.models import Job
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_MODE = 20  # per operation and mode (the suite must stay well under 10 min on 2 cores)
CALL_TIMEOUT_S = 30
GROUP_KEYS = ("story_id", "batch_id")  # where a job's request names the group that made it


async def _no_dns(host: str, port: int) -> list[str]:
    raise socket.gaierror(f"{host}: name does not resolve (the fuzzing world has no network)")


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.started_event.set()


class LiveServer:
    """The API over real HTTP on 127.0.0.1, running in its own thread and event loop (the fuzzer is a
    blocking client); `run(coro)` runs a coroutine on that loop, e.g. to read the job table."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.services: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._main, name="fuzz-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        intake = ImageIntake(
            self.tmp_path / "data" / "inputs", max_bytes=2_000_000, max_pixels=4096 * 4096, resolver=_no_dns
        )
        tokens = json.dumps([{"name": "fuzz", "token": TOKEN}])
        async with world(self.tmp_path, intake=intake, api_tokens=tokens) as w:
            self.services = w.services
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            config = uvicorn.Config(
                create_app(w.services, manage_lifecycle=False), log_level="warning", lifespan="off"
            )
            self._server = _Server(config)
            serving = asyncio.ensure_future(self._server.serve(sockets=[sock]))
            started = asyncio.ensure_future(self._server.started_event.wait())
            await asyncio.wait([serving, started], return_when=asyncio.FIRST_COMPLETED)
            self._ready.set()
            await serving

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the fuzzing server did not start within 60 s")
        if self._error is not None:
            raise self._error

    def run(self, coro, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self._server is not None:
            self.loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        self._thread.join(30)

    def job_ids(self) -> set[str]:
        async def read() -> set[str]:
            async with self.services.sessionmaker() as s:
                return set((await s.execute(select(Job.id))).scalars())

        return self.run(read())

    def group_ids(self) -> set[str]:
        """Every story and batch id."""

        async def read() -> set[str]:
            async with self.services.sessionmaker() as s:
                stories = set((await s.execute(select(Story.id))).scalars())
                return stories | set((await s.execute(select(Batch.id))).scalars())

        return self.run(read())

    def groups_of(self, job_ids: set[str]) -> dict[str, set[str]]:
        """For each job, the ids of the groups (story, batch) its request says it belongs to."""

        async def read() -> dict[str, set[str]]:
            async with self.services.sessionmaker() as s:
                rows = (await s.execute(select(Job.id, Job.request).where(Job.id.in_(job_ids)))).all()
            return {
                job_id: {str(request[k]) for k in GROUP_KEYS if isinstance(request, dict) and request.get(k)}
                for job_id, request in rows
            }

        return self.run(read()) if job_ids else {}


@pytest.fixture
def live(tmp_path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _reported_ids(response, keys: tuple[str, ...] = ("job_id",)) -> set[str]:
    """Every value of a `keys` field (e.g. `job_id`) anywhere in a JSON response body."""
    try:
        body = response.json()
    except ValueError:
        return set()
    found: set[str] = set()
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(item[k] for k in keys if isinstance(item.get(k), str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _on_existing_jobs(op, live: LiveServer):
    """`op`'s positive cases with `job_id` set to a job that exists (drawn when the case is made)."""

    def with_real_id(pair):
        case, index = pair
        ids = sorted(live.job_ids())
        if ids:
            case.path_parameters = {**(case.path_parameters or {}), "job_id": ids[index % len(ids)]}
        return case

    return st.tuples(op.as_strategy(), st.integers(0, 1000)).map(with_real_id)


def _has_inputs(op) -> bool:
    raw = op.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


def test_every_operation_survives_fuzzing_and_creates_jobs_only_when_accepted(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", timeout=CALL_TIMEOUT_S)
    seen: dict[str, int] = {}
    accepted_jobs: set[str] = set()  # job ids reported by 2xx responses
    accepted_groups: set[str] = set()  # story and batch ids reported by 2xx responses

    def unaccounted(job_ids: set[str]) -> set[str]:
        """Jobs neither reported by a 2xx response nor made by a group a 2xx response reported."""
        groups = live.groups_of(job_ids - accepted_jobs)
        return {j for j, of in groups.items() if not of & accepted_groups}

    def exercise(case) -> None:
        before, groups_before = live.job_ids(), live.group_ids()
        response = case.call(base_url=live.url, headers=AUTH, timeout=CALL_TIMEOUT_S)
        # Positive data may still be refused for what a schema cannot say (an image that does not
        # decode, a webhook host that does not resolve): that is a 4xx, checked below to create nothing.
        case.validate_response(response, excluded_checks=[positive_data_acceptance], headers=AUTH)
        created = live.job_ids() - before
        created_groups = live.group_ids() - groups_before
        label = f"{case.method} {case.path}"
        if response.status_code >= 400:
            assert not created_groups, f"{label} answered {response.status_code} but created {created_groups}"
            # only segments of stories accepted earlier, which go on being made in the background
            stray = unaccounted(created)
            assert not stray, f"{label} answered {response.status_code} but created jobs {stray}"
        else:
            groups = _reported_ids(response, GROUP_KEYS)
            unreported = created_groups - groups
            assert not unreported, f"{label} created stories or batches it did not report: {unreported}"
            accepted_jobs.update(_reported_ids(response))
            accepted_groups.update(groups)
            stray = unaccounted(created)
            assert not stray, f"{label} created jobs it did not report: {stray}"
        seen[f"{label} {response.status_code}"] = seen.get(f"{label} {response.status_code}", 0) + 1

    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema lists no operations"
    runs = []
    for op in operations:
        examples = op.get_strategies_from_examples()
        if examples:
            runs.append((op, examples, len(examples) * 2, "examples"))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            runs.append((op, [op.as_strategy(generation_mode=mode)], EXAMPLES_PER_MODE, mode))
    # Then the operations on one job again, with the ids of jobs that exist (random ids are only 404s).
    for op in operations:
        if "{job_id}" in op.path:
            runs.append((op, [_on_existing_jobs(op, live)], EXAMPLES_PER_MODE // 2, GenerationMode.POSITIVE))
    for op, strategies, count, mode in runs:

        @settings(
            max_examples=count,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies))
        def run(case) -> None:
            exercise(case)

        try:
            run()
        except Unsatisfiable:
            # An operation with no parameters and no body has no invalid form to send.
            assert mode is GenerationMode.NEGATIVE and not _has_inputs(op), f"{op.label}: {mode}"

    for route in ("/vastai/generate-video", "/vastai/generate-story", "/vastai/generate-video/batch"):
        accepted = [k for k in seen if k.startswith(f"POST {route} 20")]
        assert accepted, f"no {route} request was accepted, so acceptance was never fuzzed: {sorted(seen)}"
    # Jobs made after the last call (a story's later segments) must be accounted for too.
    stray = unaccounted(live.job_ids())
    assert not stray, f"jobs no accepted request or group accounts for: {stray}"
    found = [k for k in seen if "{job_id}" in k and " 200" in k]
    assert found, f"no operation on an existing job was fuzzed: {sorted(seen)}"


def test_fuzzing_reaches_a_server_that_refuses_the_unauthenticated(live):
    """The fuzzing server is a real one: without the token it answers 401, with it 200."""
    assert httpx.get(f"{live.url}/jobs", timeout=CALL_TIMEOUT_S).status_code == 401
    assert httpx.get(f"{live.url}/jobs", headers=AUTH, timeout=CALL_TIMEOUT_S).status_code == 200
