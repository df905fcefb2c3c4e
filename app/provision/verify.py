"""Re-checking the model files on an instance: a full sha256 of every file, computed on the machine.

provision.sh trusts a file whose sidecar still matches its size and mtime, which is right for speed but
blind to bytes that changed underneath (a disk fault, someone's edit that kept the mtime). `verify_models`
hashes every file of a plan on the instance (`sha256sum`, over SSH; nothing is transferred) and compares
with the plan's pinned sha256. `remove_models` deletes the files that differ together with their sidecars,
so the next provisioning run fetches them again.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import asdict, dataclass
from typing import Any

import asyncssh

from app.provision.errors import ProvisionTimeout, SSHUnavailable
from app.provision.plan import Plan


@dataclass
class FileCheck:
    name: str
    folder: str
    expected_sha256: str | None
    actual_sha256: str | None
    size: int | None
    # ok | mismatch (bytes differ from the pinned sha256) | missing | unknown (no pinned sha256 to compare)
    status: str
    refetched: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _remote(path: str) -> str:
    """`path` quoted for the remote shell, with a leading `~/` still meaning the login's home."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"' + (f"/{shlex.quote(rest)}" if rest else "")
    return shlex.quote(path)


def _script(plan: Plan) -> str:
    """One remote shell script: for each model file, `<index> <sha256|-> <size|->` on its own line.
    Files are read through stdin, so no file name ever needs escaping in the output."""
    models = f"{plan.comfy_dir.rstrip('/')}/models"
    lines = [f"cd -- {_remote(models)} 2>/dev/null || {{ echo 'NO_MODELS_DIR'; exit 0; }}"]
    for i, m in enumerate(plan.models):
        path = shlex.quote(f"{m.folder}/{m.name}")
        lines.append(
            f"if [ -f {path} ]; then h=$(sha256sum < {path}) && "
            f'printf \'%s %s %s\\n\' {i} "${{h%% *}}" "$(stat -c %s -- {path})"; '
            f"else printf '%s - -\\n' {i}; fi"
        )
    return "\n".join(lines) + "\n"


async def verify_models(
    conn: asyncssh.SSHClientConnection, plan: Plan, *, timeout_s: float = 3600.0
) -> list[FileCheck]:
    """Hash every model file of `plan` on the instance and compare with the plan's sha256."""
    try:
        async with asyncio.timeout(timeout_s):
            done = await conn.run("bash --norc -s", input=_script(plan), check=False)
    except TimeoutError:
        raise ProvisionTimeout(f"hashing the model files took longer than {timeout_s:.0f} s") from None
    except (OSError, asyncssh.Error) as exc:
        raise SSHUnavailable(f"could not run sha256sum on the instance: {exc}") from exc
    found: dict[int, tuple[str | None, int | None]] = {}
    for line in str(done.stdout or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            sha = parts[1] if parts[1] != "-" else None
            size = int(parts[2]) if parts[2].isdigit() else None
            found[int(parts[0])] = (sha, size)
    checks = []
    for i, m in enumerate(plan.models):
        actual, size = found.get(i, (None, None))
        expected = (m.sha256 or "").lower() or None
        if actual is None:
            status = "missing"
        elif expected is None:
            status = "unknown"
        else:
            status = "ok" if actual == expected else "mismatch"
        checks.append(FileCheck(m.name, m.folder, expected, actual, size, status))
    return checks


async def remove_models(conn: asyncssh.SSHClientConnection, plan: Plan, names: list[str]) -> None:
    """Delete these model files and their `.verified` sidecars, so provisioning downloads them again."""
    models = f"{plan.comfy_dir.rstrip('/')}/models"
    targets = []
    for m in plan.models:
        if m.name in names:
            targets += [f"{models}/{m.folder}/{m.name}", f"{models}/{m.folder}/.{m.name}.verified"]
    if not targets:
        return
    command = "rm -f -- " + " ".join(_remote(t) for t in targets)
    try:
        done = await asyncio.wait_for(conn.run(command, check=False), 60)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise SSHUnavailable(f"could not remove the differing model files: {exc}") from exc
    if done.exit_status not in (0, None):
        raise SSHUnavailable(f"removing the differing model files failed: {str(done.stderr or '')[:300]}")
