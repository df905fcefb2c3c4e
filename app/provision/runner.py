"""Run `provisioning/provision.sh` on an instance and turn its JSON lines into progress and typed errors.

The control plane never touches model bytes: it uploads a ~20 KB script and a plan, then only reads
event lines. The HF token travels on the process's stdin (not env: `AcceptEnv` is usually off on real
hosts, and an exported variable would reach every child process), and is masked in anything we keep.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import shlex
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from app.config import PROVISIONING_DIR
from app.provision.errors import (
    ComfyRestartFailed,
    DiskFull,
    DownloadFailed,
    ImageBootTimeout,
    MissingTool,
    NeedsHFToken,
    NodeInstallFailed,
    ProvisionBusy,
    ProvisionError,
    ProvisionTimeout,
    SSHUnavailable,
    VerificationFailed,
)
from app.provision.plan import Plan, update_lock
from app.redact import redact, register_secret

log = logging.getLogger(__name__)

SCRIPT_PATH = PROVISIONING_DIR / "provision.sh"
ProgressCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class ProvisionSummary:
    ok: bool
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    nodes_installed: list[str] = field(default_factory=list)
    nodes_skipped: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0
    restarted: bool = False
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of downloaded files
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes of downloaded files
    summary: dict[str, Any] = field(default_factory=dict)  # the script's own summary line

    @property
    def all_skipped(self) -> bool:
        return not self.downloaded and not self.nodes_installed


async def _call(cb: ProgressCallback | None, event: dict[str, Any]) -> None:
    if cb is None:
        return
    result = cb(event)
    if inspect.isawaitable(result):
        await result


def _error_for(code: int, errors: list[dict[str, Any]], stderr_tail: str) -> ProvisionError:
    """Map the script's exit code and its error records to one typed error."""
    first = next((e for e in errors if e.get("code") == code), errors[0] if errors else {})
    message = redact(str(first.get("message") or stderr_tail or f"provisioning exited with code {code}"))
    file = str(first.get("file") or "")
    node = str(first.get("node") or "")
    if code == 10:
        return DiskFull(message, file=file or None)
    if code == 11:
        return DownloadFailed(file, message, retryable=bool(first.get("retryable", True)))
    if code == 12:
        return VerificationFailed(file, message)
    if code == 13:
        return NeedsHFToken(file, message)
    if code == 14:
        return NodeInstallFailed(node, message)
    if code == 15:
        return ComfyRestartFailed(message)
    if code == 16:
        return MissingTool(message)
    if code == 17:
        return ProvisionBusy(message)
    if code == 18:
        return ImageBootTimeout(message)
    return ProvisionError(f"provisioning failed (exit {code}): {message}")


async def upload(conn: asyncssh.SSHClientConnection, plan: Plan, remote_dir: str) -> tuple[str, str]:
    """Put the script (content-addressed name) and the plan under `remote_dir`; return their paths."""
    script = SCRIPT_PATH.read_bytes()
    script_remote = f"{remote_dir}/provision-{hashlib.sha256(script).hexdigest()[:12]}.sh"
    plan_remote = f"{remote_dir}/plan-{uuid.uuid4().hex[:12]}.tsv"
    try:
        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(remote_dir, exist_ok=True)
            if not await sftp.exists(script_remote):
                tmp = f"{script_remote}.{uuid.uuid4().hex[:6]}.tmp"
                async with sftp.open(tmp, "wb") as f:
                    await f.write(script)
                await sftp.posix_rename(tmp, script_remote)
            # 0600: the plan may hold presigned URLs (the R2 model mirror), credentials while they live
            async with sftp.open(plan_remote, "w", attrs=asyncssh.SFTPAttrs(permissions=0o600)) as f:
                await f.write(plan.to_text())
    except (OSError, asyncssh.Error) as exc:
        raise SSHUnavailable(f"uploading the provisioning script failed: {exc}") from exc
    return script_remote, plan_remote


async def run_provision(
    conn: asyncssh.SSHClientConnection,
    plan: Plan,
    on_progress: ProgressCallback | None = None,
    *,
    hf_token: str | None = None,
    remote_dir: str = ".comfyfleet",
    timeout_s: float | None = None,
) -> ProvisionSummary:
    """Ensure `plan` on the instance behind `conn`; `on_progress` receives every event dict."""
    register_secret(hf_token)
    started = time.monotonic()
    try:  # the upload counts against the same deadline (an SFTP server that never answers must not hang us)
        async with asyncio.timeout(timeout_s):
            script_remote, plan_remote = await upload(conn, plan, remote_dir)
    except TimeoutError:
        raise ProvisionTimeout(
            f"uploading the provisioning script took longer than {timeout_s:.0f} s"
        ) from None
    total_s = timeout_s
    if timeout_s is not None:
        timeout_s = max(0.0, timeout_s - (time.monotonic() - started))
    # --norc: Debian's bash sources ~/.bashrc when started by sshd, even non-interactive (slow on images
    # with pyenv/conda hooks there).
    command = f"bash --norc {shlex.quote(script_remote)} {shlex.quote(plan_remote)}"
    if hf_token:
        command += " --token-stdin"
    command += f"; rc=$?; rm -f {shlex.quote(plan_remote)}; exit $rc"

    summary = ProvisionSummary(ok=False)
    errors: list[dict[str, Any]] = []
    stderr_tail: deque[str] = deque(maxlen=40)
    remote_pid: int | None = None
    remote_pgid: int | None = None

    async def read_stdout(proc: asyncssh.SSHClientProcess) -> None:
        nonlocal remote_pid, remote_pgid
        async for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line, strict=False)  # names may hold control characters
            except ValueError:
                log.debug("provision: %s", redact(line))
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "begin":
                remote_pid = event.get("pid")
                remote_pgid = event.get("pgid") or None
            elif kind == "done":
                summary.downloaded.append(event["file"])
                summary.bytes_downloaded += int(event.get("bytes", 0))
                summary.sha256[event["file"]] = event.get("sha256", "")
                summary.sizes[event["file"]] = int(event.get("bytes", 0))
            elif kind == "skipped":
                summary.skipped.append(event["file"])
            elif kind == "node_done":
                summary.nodes_installed.append(event["node"])
            elif kind == "node_skipped":
                summary.nodes_skipped.append(event["node"])
            elif kind in ("error", "node_error"):
                errors.append(event)
            elif kind == "summary":
                summary.summary = event
                summary.restarted = bool(event.get("restarted"))
                errors.extend(e for e in event.get("errors", []) if e not in errors and "component" in e)
            await _call(on_progress, event)

    async def read_stderr(proc: asyncssh.SSHClientProcess) -> None:
        async for line in proc.stderr:
            if line.strip():
                stderr_tail.append(redact(line.rstrip()))

    try:
        proc = await conn.create_process(command, encoding="utf-8", errors="replace")
    except (OSError, asyncssh.Error) as exc:
        raise SSHUnavailable(f"starting the provisioning script failed: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            if hf_token:
                proc.stdin.write(hf_token + "\n")
            proc.stdin.write_eof()
            await asyncio.gather(read_stdout(proc), read_stderr(proc))
            completed = await proc.wait()
    except TimeoutError:
        await _stop_remote(conn, remote_pid, remote_pgid)
        raise ProvisionTimeout(f"provisioning did not finish within {total_s:.0f} s; stopped it") from None
    except asyncio.CancelledError:
        await _stop_remote(conn, remote_pid, remote_pgid)
        raise
    except (OSError, asyncssh.Error) as exc:
        raise SSHUnavailable(f"the SSH connection dropped during provisioning: {exc}") from exc
    finally:
        proc.close()

    summary.seconds = time.monotonic() - started
    code = completed.exit_status
    if code is None:
        raise SSHUnavailable(
            f"the SSH connection dropped during provisioning (signal {completed.exit_signal})"
        )
    _record_lock(plan, summary)
    if code != 0:
        raise _error_for(code, errors, " | ".join(stderr_tail))
    summary.ok = True
    return summary


def _record_lock(plan: Plan, summary: ProvisionSummary) -> None:
    """Pin what was really downloaded (size + sha256) so later provisions get the same bytes."""
    if plan.lock_path is None or not summary.sha256:
        return
    by_name = {m.name: m for m in plan.models}
    entries: dict[str, dict[str, Any]] = {}
    for name, sha in summary.sha256.items():
        m = by_name.get(name)
        if m is None or not sha:
            continue
        entries[f"{m.folder}/{m.name}"] = {
            "sha256": sha,
            "size": summary.sizes.get(name),
            "source": m.source_url,
        }
    if entries:
        try:
            update_lock(plan.lock_path, plan.workflow, entries)
        except OSError as exc:
            log.warning("could not update the lock file %s: %s", plan.lock_path, exc)


# Stop a provisioning run and wait until none of its processes is left. sshd (and the simulated SSH
# server) start each command in a session of its own, so the script's process group holds the script, its
# download subshells and every curl/tail they started, even after the script itself died (a closed
# channel kills it by SIGPIPE and orphans its curl). TERM the whole group (no walk of the process tree
# that a subshell could race by starting its next download), wait until no live (non-zombie) process of
# it remains, KILL what is left after 10 s. The group is signalled only when every member is in the
# session that group leads (a group we started); otherwise only the script's pid gets TERM.
_STOP_SCRIPT = r"""
p=%d g=%d
if [ "$g" -le 1 ] && read -r s </proc/$p/stat 2>/dev/null; then set -- ${s##*) }; g=$3; fi
members() {  # live members of group $g; returns 2 if one of them is outside session $g
    local f l n=0
    for f in /proc/[0-9]*/stat; do
        read -r l <"$f" 2>/dev/null || continue
        set -- ${l##*) }
        [ "$3" = "$g" ] && [ "$1" != Z ] || continue
        [ "$4" = "$g" ] || return 2
        n=$((n + 1))
    done
    [ "$n" -gt 0 ]
}
[ "$g" -gt 1 ] 2>/dev/null || { kill -TERM "$p" 2>/dev/null; echo "no group; sent TERM to $p"; exit 0; }
members; rc=$?
[ "$rc" = 2 ] && { kill -TERM "$p" 2>/dev/null; echo "group $g is not a session; sent TERM to $p"; exit 0; }
[ "$rc" = 0 ] || { echo "group $g: nothing left"; exit 0; }
kill -TERM -- "-$g" 2>/dev/null
n=0
while members; do
    n=$((n + 1))
    if [ "$n" -ge 100 ]; then kill -KILL -- "-$g" 2>/dev/null; echo "group $g: killed after 10 s"; exit 0; fi
    sleep 0.1
done
echo "group $g: stopped"
"""


async def _stop_remote(conn: asyncssh.SSHClientConnection, pid: int | None, pgid: int | None = None) -> None:
    """Without a PTY the remote script outlives the channel: stop its whole process group, and return
    once no process of it is left (a cancelled provision leaves nothing running on the machine)."""
    if not pid:
        return
    command = f"bash --norc -c {shlex.quote(_STOP_SCRIPT % (int(pid), int(pgid or 0)))}"
    try:
        result = await asyncio.wait_for(conn.run(command, check=False), timeout=20)
        log.info("stopping the remote provisioning run: %s", str(result.stdout or "").strip())
    except Exception as exc:
        log.warning("could not stop the remote provisioning run (pid %s): %s", pid, exc)
