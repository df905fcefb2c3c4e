"""Local bare git repos standing in for custom-node repos on GitHub (no network in tests).

`make_node_repo(base, name, versions)` makes `<base>/<name>.git` with one commit per version (a dict of
file path -> content) and returns its URL (a plain path, which `git clone` accepts) and commit ids, so a
test can pin a node to an older commit than the repo's HEAD.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "comfyfleet tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "comfyfleet tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass(frozen=True)
class NodeRepo:
    name: str
    url: str
    commits: list[str]  # oldest first

    @property
    def head(self) -> str:
        return self.commits[-1]


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **_GIT_ENV}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_node_repo(base: Path, name: str, versions: list[dict[str, str]]) -> NodeRepo:
    work = base / f"{name}.work"
    bare = base / f"{name}.git"
    work.mkdir(parents=True)
    _git("init", "-q", "-b", "main", cwd=work)
    commits = []
    for i, files in enumerate(versions):
        for rel, content in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "-m", f"{name} v{i + 1}", cwd=work)
        commits.append(_git("rev-parse", "HEAD", cwd=work))
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=base)
    return NodeRepo(name=name, url=str(bare), commits=commits)


def default_node_repos(base: Path) -> dict[str, NodeRepo]:
    """ComfyUI-GGUF (requirements: a real line) and ComfyUI-VideoHelperSuite (comments only)."""
    gguf = make_node_repo(
        base,
        "ComfyUI-GGUF",
        [
            {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "requirements.txt": "gguf>=0.13\n"},
            {"__init__.py": "NODE_CLASS_MAPPINGS = {'UnetLoaderGGUF': object}\n"},
        ],
    )
    vhs = make_node_repo(
        base,
        "ComfyUI-VideoHelperSuite",
        [
            {
                "__init__.py": "NODE_CLASS_MAPPINGS = {'VHS_VideoCombine': object}\n",
                "requirements.txt": "# none\n",
            }
        ],
    )
    return {gguf.name: gguf, vhs.name: vhs}
