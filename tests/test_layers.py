"""The rooms stay layered: a lower room never imports a higher one, not even lazily inside a function.

The order is the README's architecture table: `api` on top, then `jobs`, then the rooms the jobs use
(`pool`, `vast`, `provision`, and below them `comfy`, `store`, `workflows`, `intake`). A shared piece two
rooms need belongs in the lower one (the pool's errors and ports are in `app.pool`, image intake in
`app.intake`), so each room can be read, tested and replaced without the ones above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# room -> the rooms it must never import
FORBIDDEN = {
    "jobs": {"api"},
    "pool": {"api", "jobs", "client"},
    "vast": {"api", "jobs", "client"},
    "provision": {"api", "jobs", "client"},
    "comfy": {"api", "jobs", "client", "pool", "vast", "provision"},
    "store": {"api", "jobs", "client", "pool", "vast", "provision"},
    "workflows": {"api", "jobs", "client", "pool", "vast", "provision"},
    "intake": {"api", "jobs", "client", "pool", "vast", "provision"},
    # the client only speaks HTTP: it shares the API's response models (see the test below), nothing else
    "client": {"jobs", "pool", "provision", "sim", "store", "comfy"},
}
API_MODELS = {"app.api.schemas", "app.api.group_schemas"}


def _room(path: Path) -> str:
    rel = path.relative_to(APP)
    return rel.parts[0].removesuffix(".py")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every `app.` import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "app"]
        for name in names:
            if name.startswith("app."):
                found.append((node.lineno, name))
    return found


def _violations() -> list[str]:
    out = []
    for path in sorted(APP.rglob("*.py")):
        banned = FORBIDDEN.get(_room(path), set())
        for line, module in _imported_modules(path):
            room = module.split(".")[1]
            if room in banned:
                out.append(f"{path.relative_to(APP.parent)}:{line} imports app.{room}")
    return out


def test_no_room_imports_a_room_above_it():
    assert _violations() == []


def test_the_client_takes_only_the_response_models_from_the_api():
    stray = [
        f"{path.relative_to(APP.parent)}:{line} imports {module}"
        for path in sorted((APP / "client").rglob("*.py"))
        for line, module in _imported_modules(path)
        if module.startswith("app.api") and module not in API_MODELS
    ]
    assert stray == []


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_every_guarded_room_exists(room):
    # a renamed room would make its rule check nothing
    assert (APP / room).is_dir() or (APP / f"{room}.py").is_file()
