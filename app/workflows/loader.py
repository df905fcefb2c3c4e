"""Finding workflows: the shipped `workflows/` folder plus the user's `WORKFLOWS_DIR`.

A user folder with the same name as a shipped one replaces it (copy, edit, keep the name), and the
graph hash changes with it, so cached results of the shipped version are never served for it.
Parsed folders are cached by file modification time, so calling this per request is cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.config import SHIPPED_WORKFLOWS_DIR, Settings
from app.errors import ValidationError
from app.workflows.manifest import MANIFEST, WorkflowError, load_workflow_dir
from app.workflows.model import Workflow

log = logging.getLogger(__name__)

_cache: dict[Path, tuple[tuple, Workflow]] = {}


def _stamp(folder: Path) -> tuple:
    out = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            out.append((f.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _load_dir(root: Path, source: str, broken: dict[str, WorkflowError] | None) -> dict[str, Workflow]:
    found: dict[str, Workflow] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        if not (folder / MANIFEST).is_file():
            log.debug("skipping %s: no %s", folder, MANIFEST)
            continue
        stamp = (source, _stamp(folder))
        cached = _cache.get(folder)
        if cached is not None and cached[0] == stamp:
            wf = cached[1]
        else:
            try:
                wf = load_workflow_dir(folder, source)
            except WorkflowError as exc:
                if broken is None:
                    raise
                log.error("%s", exc)
                broken[folder.name] = exc
                continue
            _cache[folder] = (stamp, wf)
        found[wf.name] = wf
    return found


def _load_all(settings: Settings, broken: dict[str, WorkflowError] | None) -> dict[str, Workflow]:
    workflows = _load_dir(SHIPPED_WORKFLOWS_DIR, "shipped", broken) if SHIPPED_WORKFLOWS_DIR.is_dir() else {}
    user_dir = settings.workflows_dir
    if user_dir is not None:
        user_dir = Path(user_dir).expanduser()
        if not user_dir.is_dir():
            raise WorkflowError(f"WORKFLOWS_DIR {user_dir} is not a directory")
        if user_dir.resolve() != SHIPPED_WORKFLOWS_DIR.resolve():
            for name, wf in _load_dir(user_dir, "user", broken).items():
                if name in workflows:
                    log.warning("workflow %s from %s replaces the shipped one", name, wf.path)
                workflows[name] = wf
    return workflows


def load_workflows(settings: Settings) -> dict[str, Workflow]:
    """Every workflow by name; a broken folder raises `WorkflowError` naming the file and the problem."""
    return _load_all(settings, None)


def get_workflow(name: str, settings: Settings) -> Workflow:
    """The named workflow; an unknown name is a `ValidationError("workflow", ...)` listing the known ones.

    A broken folder only fails requests for its own name (with its `WorkflowError`): one bad user
    workflow must not stop the others from serving.
    """
    broken: dict[str, WorkflowError] = {}
    workflows = _load_all(settings, broken)
    if isinstance(name, str) and name in workflows:
        return workflows[name]
    if isinstance(name, str) and name in broken:
        raise broken[name]
    known = ", ".join(sorted(workflows)) or "none"
    raise ValidationError("workflow", f"unknown workflow {name!r} (available: {known})")
