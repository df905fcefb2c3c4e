"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright) against the real
product (`build_services` + `create_app` under uvicorn) attached to a simulated world.

Every test checks that the page asked no host other than the server for anything (the browser also runs
with every other host name unresolvable, as on an offline machine). With COMFYFLEET_SCREENSHOTS=<dir> the
tests also save a screenshot of each view there (`scripts/console_screenshots.sh` makes docs/console/).
"""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.browser import Requests, chromium
from tests.support.liveserver import LiveServer, sim_console

TOKEN = "console-token-0123456789"
WAIT_MS = 60_000
SHOTS = os.environ.get("COMFYFLEET_SCREENSHOTS")
# Records every text the page puts into an element with an id, in order (window.__shown), so a test can
# check what was shown on the way without racing the page.
RECORD_TEXT = """
window.__shown = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes)
    if (r.target.id && n.nodeType === Node.TEXT_NODE) window.__shown.push([r.target.id, n.textContent]);
}).observe(document, { subtree: true, childList: true });
"""


def _png(width: int = 320, height: int = 192) -> bytes:
    img = Image.new("RGB", (width, height), (30, 90, 160))
    for x in range(0, width, 16):  # some structure, so the simulated camera move is visible
        img.paste((240, 200, 40), (x, 0, x + 4, height))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("console") / "data"
    # 0.15 s per sampler step: progress is seen step by step, and a 40-step job runs long enough to cancel
    with LiveServer(sim_console(data, token=TOKEN, sim_step_delay_s=0.15)) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(RECORD_TEXT)
    seen = Requests(context)
    page = context.new_page()
    page.seen = seen
    yield page
    context.close()
    assert seen.foreign(server.url) == [], "the console asked another host for something"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "start.png"
    path.write_bytes(_png())
    return path


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _open(page, server, hash_: str = "") -> None:
    """Open the console and give the token when it asks (once per browser session)."""
    page.goto(f"{server.url}/{hash_}")
    page.wait_for_selector("#token-dialog[open]", timeout=WAIT_MS)
    page.fill("#token-input", TOKEN)
    page.click("#token-save")
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)


def _api(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


def _fill(page, image_file: Path, **fields) -> None:
    page.set_input_files("#f-image", str(image_file))
    for name, value in fields.items():
        page.fill(f"#f-{name}", str(value))


def _wait_state(page, state: str) -> None:
    page.wait_for_function(
        "s => document.querySelector('#watch-state').textContent === s", arg=state, timeout=WAIT_MS
    )


def _job_id(page) -> str:
    page.wait_for_url(re.compile(r"#watch/job_"), timeout=WAIT_MS)
    return page.url.rsplit("/", 1)[1]


def test_token_asked_once_kept_in_session_storage_and_banner_on_every_page(page, server):
    _open(page, server)
    assert page.evaluate("sessionStorage.getItem('comfyfleet-token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    html = page.content()
    assert TOKEN not in html.replace(page.input_value("#token-input"), "")  # the page holds no secret
    for view in ("create", "watch", "gallery", "fleet"):
        page.goto(f"{server.url}/#{view}")
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
        assert not page.is_visible("#token-dialog"), "the token was asked again"
        assert page.is_visible(f"#view-{view}")
        assert "SIMULATED WORLD" in page.inner_text("#sim-banner") and page.is_visible("#sim-banner")
    # the form was built from GET /workflows: limits and defaults of the manifest
    page.goto(f"{server.url}/#create")
    page.wait_for_selector("#f-num_frames", timeout=WAIT_MS)
    assert page.get_attribute("#f-num_frames", "max") == "161"
    assert page.input_value("#f-num_frames") == "81" and page.get_attribute("#f-width", "step") == "16"


def test_bad_form_value_is_shown_next_to_its_field(page, server, image_file):
    _open(page, server, "#create")
    before = len(_api(server).get("/jobs").json()["jobs"])
    _fill(page, image_file, prompt="a lighthouse", width=650, num_frames=80)
    page.click("#submit")
    width_error = page.locator('.field-error[data-for="width"]')
    width_error.filter(has_text="multiple of 16").wait_for(timeout=WAIT_MS)
    assert page.get_attribute("#f-width", "aria-invalid") == "true"
    # the error sits in the width field's own row, next to its input
    assert page.locator(".field", has=page.locator("#f-width")).locator(".field-error").inner_text()
    _shot(page, "create-error")
    assert len(_api(server).get("/jobs").json()["jobs"]) == before  # no job was made


def test_submit_from_the_form_watch_progress_and_play_the_result(page, server, image_file):
    _open(page, server, "#create")
    _shot(page, "create")
    _fill(page, image_file, prompt="waves roll in", num_frames=17, fps=16, steps=8, seed=7)
    page.click("#submit")
    job_id = _job_id(page)
    page.wait_for_function(
        "document.querySelector('#watch-state').textContent === 'running'", timeout=WAIT_MS
    )
    _shot(page, "watch-running")
    page.wait_for_function(
        "document.querySelector('#watch-state').textContent === 'succeeded'", timeout=WAIT_MS
    )
    assert page.inner_text("#watch-percent") == "100%" and page.is_hidden("#cancel")
    # live progress from the SSE stream was shown on the way: the sampler's steps (two passes of 4
    # steps), stages, and percentages between 0 and 100 (every text the page showed, recorded as it changed)
    shown = page.evaluate("window.__shown")
    steps = {t for field, t in shown if field == "watch-step"}
    stages = {t for field, t in shown if field == "watch-stage"}
    percents = {int(t.rstrip("%")) for field, t in shown if field == "watch-percent"}
    assert steps & {f"{i} / 4" for i in range(1, 5)}, steps
    assert any(s.startswith("sampling") for s in stages) and "provisioning" in stages, stages
    assert any(0 < p < 100 for p in percents), percents
    job = _api(server).get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["result"]["seed"] == 7

    # the <video> plays the stored MP4: its duration is the job's frames / fps
    page.wait_for_function("document.querySelector('#watch-video').readyState >= 1", timeout=WAIT_MS)
    duration = page.evaluate("document.querySelector('#watch-video').duration")
    frames, fps = job["result"]["num_frames"], job["result"]["fps"]
    assert (frames, fps) == (17, 16)
    assert abs(duration - frames / fps) < 1 / fps, (duration, frames / fps)
    page.evaluate("document.querySelector('#watch-video').play()")
    page.wait_for_function("document.querySelector('#watch-video').currentTime > 0", timeout=WAIT_MS)
    page.evaluate("document.querySelector('#watch-video').pause()")
    _shot(page, "watch-done")

    # the gallery shows it, with its seed, and runs it again with a new seed
    page.goto(f"{server.url}/#gallery")
    card = page.locator(f'article[data-job="{job_id}"]')
    card.wait_for(timeout=WAIT_MS)
    assert "seed 7" in card.inner_text() and card.locator("video").count() == 1
    _shot(page, "gallery")
    # filters: by state (server side) and by workflow
    page.select_option("#g-state", "failed")
    card.wait_for(state="detached", timeout=WAIT_MS)
    page.select_option("#g-state", "succeeded")
    page.select_option("#g-workflow", job["workflow"])
    card.wait_for(timeout=WAIT_MS)
    page.select_option("#g-state", "")
    card.get_by_role("button", name="Run with a new seed").click()
    rerun_id = _job_id(page)
    assert rerun_id != job_id
    page.wait_for_function(
        "document.querySelector('#watch-state').textContent === 'succeeded'", timeout=WAIT_MS
    )
    assert _api(server).get(f"/jobs/{rerun_id}").json()["params"]["prompt"] == "waves roll in"


def test_cancel_a_running_job(page, server, image_file):
    _open(page, server, "#create")
    _fill(page, image_file, prompt="a slow one", num_frames=17, steps=40)
    page.click("#submit")
    job_id = _job_id(page)
    page.wait_for_function(
        "document.querySelector('#watch-state').textContent === 'running'", timeout=WAIT_MS
    )
    page.click("#cancel")
    page.wait_for_function(
        "document.querySelector('#watch-state').textContent === 'cancelled'", timeout=WAIT_MS
    )
    assert page.is_visible("#watch-error") and page.inner_text("#watch-error")
    assert _api(server).get(f"/jobs/{job_id}").json()["state"] == "cancelled"
    _shot(page, "watch-cancelled")


def _ensure_instance(server) -> None:
    """Run alone, a test still finds an instance in the fleet: one short job rents it."""
    with _api(server) as api:
        if not api.get("/instances").json()["instances"]:
            body = {"image_base64": base64.b64encode(_png()).decode(), "prompt": "x", "wait": True}
            job = api.post("/vastai/generate-video", json={**body, "num_frames": 5}).json()
            assert job["state"] == "succeeded", job


def test_a_failed_job_shows_its_error_in_plain_words(page, server, image_file):
    _ensure_instance(server)
    world, _services = server.handle

    async def set_fault(node: str | None) -> None:
        for box in world.backend.boxes.values():
            box.comfy.faults.error_at_node = node
            box.comfy.faults.error_message = "the sampler ran into a simulated failure"

    server.call(lambda: set_fault("85"))  # the low-noise sampler pass
    try:
        _open(page, server, "#create")
        _fill(page, image_file, prompt="this one fails", num_frames=5)
        page.click("#submit")
        job_id = _job_id(page)
        _wait_state(page, "failed")
    finally:
        server.call(lambda: set_fault(None))
    shown = page.inner_text("#watch-error")
    job = _api(server).get(f"/jobs/{job_id}").json()
    assert page.is_visible("#watch-error") and shown == job["error"]["message"]
    assert "simulated failure" in shown, shown
    _shot(page, "watch-failed")


def test_fleet_shows_an_instance_and_the_spend(page, server):
    _ensure_instance(server)
    with _api(server) as api:
        instances = api.get("/instances").json()["instances"]
        spend = api.get("/spend").json()
    assert instances
    _open(page, server, "#fleet")
    row = page.locator(f'#instances tr[data-instance="{instances[0]["id"]}"]')
    row.wait_for(timeout=WAIT_MS)
    assert instances[0]["state"] in row.inner_text() and "$" in row.inner_text()
    # its provisioning (from GET /instances/{id}): the workflow's model files, all verified
    prov = _api(server).get(f"/instances/{instances[0]['id']}").json()["provisioning"][0]
    assert f"{prov['files_verified']}/{len(prov['files'])} verified" in row.inner_text(), prov
    assert "cap" in page.inner_text("#spend-today") and f"{spend['cap_usd']:.4f}" in page.inner_text(
        "#spend-today"
    )
    _shot(page, "fleet")

    # destroy it from the page (two clicks: the button asks once more)
    row.locator("button.destroy").click()
    row.get_by_role("button", name="Really destroy?").click()
    row.wait_for(state="detached", timeout=WAIT_MS)
    with _api(server) as api:
        live = [i["id"] for i in api.get("/instances").json()["instances"]]
    assert instances[0]["id"] not in live


def test_build_a_story_from_the_form(page, server, image_file):
    _open(page, server, "#create")
    _fill(page, image_file, prompt="dawn over the sea", num_frames=9, steps=2)
    page.check("#f-story")
    page.locator('[name="segment-prompt"]').first.fill("dusk over the sea")
    _shot(page, "create-story")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#watch/story_"), timeout=WAIT_MS)
    story_id = page.url.rsplit("/", 1)[1]
    _wait_state(page, "succeeded")
    segments = {t for field, t in page.evaluate("window.__shown") if field == "watch-segment"}
    assert {"1 of 2", "2 of 2"} <= segments, segments
    story = _api(server).get(f"/stories/{story_id}").json()
    assert story["state"] == "succeeded" and len(story["segments"]) == 2
    assert [s["prompt"] for s in story["segments"]] == ["dawn over the sea", "dusk over the sea"]
    page.wait_for_function("document.querySelector('#watch-video').readyState >= 1", timeout=WAIT_MS)
    assert page.evaluate("document.querySelector('#watch-video').duration") > 0
