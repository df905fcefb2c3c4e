import pytest

from app.db import make_sessionmaker
from app.jobs.models import ALLOWED_TRANSITIONS, TERMINAL_STATES, IllegalTransition, JobState
from app.jobs.repo import JobRepo
from tests.jobs.harness import create_tables

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
async def repo(database):
    engine = await create_tables(database.url)
    yield JobRepo(make_sessionmaker(engine))
    await engine.dispose()


def test_every_active_state_can_fail_or_be_cancelled():
    for state, nxt in ALLOWED_TRANSITIONS.items():
        if state in TERMINAL_STATES:
            assert not nxt
        else:
            assert {JobState.FAILED, JobState.CANCELLED} <= nxt


async def test_happy_path_records_timings_per_state(repo):
    job = await repo.create(workflow="w", request={})
    for st in ("acquiring", "provisioning", "running", "uploading", "succeeded"):
        job = await repo.transition(job.id, st)
    assert job.state == "succeeded" and job.progress == 1.0 and job.finished_at is not None
    assert set(job.timings) == {"queued", "acquiring", "provisioning", "running", "uploading"}


async def test_cache_hit_goes_straight_from_queued_to_succeeded(repo):
    job = await repo.create(workflow="w", request={})
    job = await repo.transition(job.id, JobState.SUCCEEDED)
    assert job.state == "succeeded"


async def test_finished_job_cannot_move_again(repo):
    job = await repo.create(workflow="w", request={})
    await repo.transition(job.id, JobState.CANCELLED)
    with pytest.raises(IllegalTransition):
        await repo.transition(job.id, JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        await repo.transition(job.id, JobState.SUCCEEDED)


async def test_skipping_a_state_is_illegal(repo):
    job = await repo.create(workflow="w", request={})
    with pytest.raises(IllegalTransition):
        await repo.transition(job.id, JobState.UPLOADING)


async def test_error_message_is_redacted_when_written(repo):
    from app.redact import register_secret

    register_secret("supersecret-token-123")
    job = await repo.create(workflow="w", request={})
    job = await repo.transition(
        job.id, JobState.FAILED, error_message="auth failed for supersecret-token-123"
    )
    assert "supersecret" not in job.error_message


async def test_queue_position_counts_earlier_waiting_jobs(repo):
    a = await repo.create(workflow="w", request={})
    b = await repo.create(workflow="w", request={})
    c = await repo.create(workflow="w", request={})
    await repo.transition(a.id, JobState.ACQUIRING)
    await repo.transition(a.id, JobState.RUNNING)
    assert await repo.queue_position(await repo.require(a.id)) is None
    assert await repo.queue_position(b) == 1
    assert await repo.queue_position(c) == 2


async def test_error_text_with_a_nul_character_is_stored(repo):
    """An error message from elsewhere may hold NUL, which PostgreSQL refuses in text: the job must still
    end (failed, with the message readable), not stay active because its final write failed."""
    job = await repo.create(workflow="w", request={"prompt": "nul \x00 inside JSON is fine"})
    ended = await repo.transition(job.id, JobState.FAILED, error_kind="comfy", error_message="bad\x00node")
    assert ended.state == "failed"
    stored = await repo.require(job.id)
    assert (
        stored.error_message == "bad\ufffdnode" and stored.request["prompt"] == "nul \x00 inside JSON is fine"
    )
    await repo.set_fields(job.id, webhook_last_error="receiver said \x00")
    assert (await repo.require(job.id)).webhook_last_error == "receiver said \ufffd"
    await repo.record_cleanup(kind="stuck_job", target=job.id, reason="why\x00", ok=False, error="e\x00")
    assert (await repo.cleanup_actions())[0].reason == "why\ufffd"
