"""What a new user does after the README: `comfyfleet generate` a few times in a fresh checkout.

Three real `generate` processes, each starting (and stopping) its own simulated world in one data dir, as
three runs from a shell would. Afterwards nothing piles up and nothing lies: no world folder is left in
`data/sim`, the ledger holds no live row (each world's instances were destroyed and recorded when it
ended), every simulated instance id is unique, and the videos went to `out/`, not the current folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.pool.provider import InstanceState
from tests.e2e import procs
from tests.e2e.conftest import png_bytes

RUNS = 3


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*procs.CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    checkout = tmp_path_factory.mktemp("checkout")  # the user's current folder
    data = checkout / "data"
    env = procs.sim_env(data)
    env.pop("DATABASE_URL", None)  # the default: SQLite under data/
    image = checkout / "in.png"
    image.write_bytes(png_bytes())
    args = ["generate", "--image", str(image), "--frames", "9", "--width", "256", "--height", "256"]
    # a new prompt each time: a cache hit would rent nothing
    runs = [_cli([*args, "--prompt", f"run {n}"], checkout, env, 180) for n in range(RUNS)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    return {"checkout": checkout, "data": data, "runs": runs, "ledger": procs.ledger(data)}


def test_simulated_world_folders_are_removed_when_the_world_stops(three_runs):
    sim = three_runs["data"] / "sim"
    assert sim.is_dir()
    assert not list(sim.glob("world-*")), sorted(p.name for p in sim.iterdir())
    assert not (sim / "world.json").exists()


def test_generate_leaves_the_ledger_true_no_live_row_after_it_ends(three_runs):
    rows = three_runs["ledger"]
    assert len(rows) == RUNS, rows
    for row in rows:
        assert row.state is InstanceState.DESTROYED and row.destroyed_at, row
    # and `cleanup --dry-run` agrees: nothing of these runs is left to clean up
    env = procs.sim_env(three_runs["data"])
    env.pop("DATABASE_URL", None)
    dry = _cli(["cleanup", "--dry-run", "--json"], three_runs["checkout"], env, 60)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert not [a for a in json.loads(dry.stdout) if a["kind"].endswith("_instance")], dry.stdout


def test_simulated_instance_ids_are_unique_for_a_data_directory(three_runs):
    ids = [row.id for row in three_runs["ledger"]]
    assert len(ids) == RUNS and all(ids), ids
    assert len(set(ids)) == RUNS, ids
    assert (three_runs["data"] / "sim" / "instance-ids").read_text().strip() == max(ids)


def test_generate_without_output_writes_into_out_and_says_where(three_runs):
    checkout: Path = three_runs["checkout"]
    videos = sorted((checkout / "out").glob("*.mp4"))
    assert len(videos) == RUNS, videos  # one per run, none overwritten
    assert not list(checkout.glob("*.mp4")), "a video was written into the current folder"
    for r in three_runs["runs"]:
        local = next(line for line in r.stdout.splitlines() if line.startswith("local: "))
        path = Path(local.removeprefix("local: ").split("  (")[0])
        assert path.parent == checkout / "out" and path.suffix == ".mp4", local
        assert "written under out/" in local
