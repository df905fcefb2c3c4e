"""The provisioning plan: what an instance must hold for a workflow, as the remote script reads it.

The plan is a small line-based text file (documented at the top of `provisioning/provision.sh`) so the
script needs nothing but bash to read it. Exact sizes and hashes are resolved here, on the control plane,
by a HEAD on each model's source (the Hub answers `X-Linked-Size` / `X-Linked-Etag` on `/resolve/` URLs
without following its CDN redirect), and pinned in a lock file under `data_dir`, so a later provision
downloads the same bytes and a changed upstream file is detected instead of silently used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from app.config import Settings
from app.provision.errors import UpstreamChanged

log = logging.getLogger(__name__)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_TOKEN_HOSTS = ("huggingface.co",)
# "auto" (in the script): the machine's `<comfy_dir>/.comfyfleet/restart` hook when present (the simulated
# world installs one), else `supervisorctl restart comfyui` (Vast's ComfyUI image), else none.
DEFAULT_RESTART_CMD = "auto"


@dataclass(frozen=True)
class PlannedModel:
    folder: str
    name: str
    url: str  # where the script downloads from (the mirror when one is set)
    size: int | None
    size_exact: bool
    sha256: str | None
    source_url: str  # the manifest's URL (for the lock file and messages)
    fallback_url: str | None = None  # tried when `url` fails (e.g. the Hub behind an R2 presigned URL)


@dataclass(frozen=True)
class PlannedNode:
    name: str
    git_url: str
    commit: str


@dataclass
class Plan:
    workflow: str
    models: list[PlannedModel]
    nodes: list[PlannedNode]
    comfy_dir: str = "/workspace/ComfyUI"
    parallel: int = 4
    python: str = "auto"
    pip: bool = True
    restart_cmd: str | None = DEFAULT_RESTART_CMD
    comfy_url: str | None = None
    restart_timeout_s: int = 300
    min_free_bytes: int = 1 << 30
    token_hosts: tuple[str, ...] = DEFAULT_TOKEN_HOSTS
    retries: int = 6
    backoff_s: float = 1.0
    stall_timeout_s: int = 60
    connect_timeout_s: int = 20
    progress_interval_s: float = 1.0
    connections: int = 8  # per file (segmented downloads)
    max_connections: int = 16  # for the whole run
    segment_bytes: int = 64 << 20
    boot_wait_s: int = 0  # wait this long for the image's boot (main.py there, boot_marker gone); 0 = not
    boot_marker: str | None = None
    lock_path: Path | None = field(default=None, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(m.size or 0 for m in self.models)

    def to_text(self) -> str:
        """The plan file the remote script reads (TAB-separated records, `-` = empty)."""

        def clean(value: object) -> str:
            text = str(value)
            if any(c in text for c in "\t\n\r"):
                raise ValueError(f"plan value contains a tab or newline: {text!r}")
            return text or "-"

        settings: list[tuple[str, object]] = [
            ("comfy_dir", self.comfy_dir),
            ("parallel", self.parallel),
            ("python", self.python),
            ("pip", 1 if self.pip else 0),
            ("restart", self.restart_cmd or "-"),
            ("comfy_url", self.comfy_url or "-"),
            ("restart_timeout", self.restart_timeout_s),
            ("min_free", self.min_free_bytes),
            ("token_hosts", ",".join(self.token_hosts)),
            ("retries", self.retries),
            ("backoff", self.backoff_s),
            ("stall_timeout", self.stall_timeout_s),
            ("connect_timeout", self.connect_timeout_s),
            ("progress_interval", self.progress_interval_s),
            ("connections", self.connections),
            ("max_connections", self.max_connections),
            ("segment_size", self.segment_bytes),
        ]
        if self.boot_wait_s > 0:
            settings += [("boot_wait", int(self.boot_wait_s)), ("boot_marker", self.boot_marker or "-")]
        lines = [f"# comfyfleet provisioning plan v1: workflow {clean(self.workflow)}"]
        lines += [f"set\t{k}\t{clean(v)}" for k, v in settings]
        for m in self.models:
            size = str(m.size or 0) if m.size_exact else f"~{m.size or 0}"
            fields = ["model", clean(m.folder), clean(m.name), size, m.sha256 or "-", clean(m.url)]
            lines.append("\t".join([*fields, clean(m.fallback_url or "")]))
        for n in self.nodes:
            lines.append("\t".join(["node", clean(n.name), clean(n.git_url), clean(n.commit)]))
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Resolved:
    size: int | None = None
    sha256: str | None = None
    status: int | None = None


def _etag_sha(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _SHA_RE.match(value) else None


async def resolve_source(
    client: httpx.AsyncClient, url: str, *, token: str | None = None, token_hosts: tuple[str, ...] = ()
) -> Resolved:
    """HEAD `url` (redirects followed by hand, so a token only ever goes to `token_hosts`)."""
    for _ in range(6):
        host = (urlsplit(url).hostname or "").lower()
        headers = {"Authorization": f"Bearer {token}"} if token and host in token_hosts else {}
        try:
            response = await client.head(url, headers=headers, follow_redirects=False)
        except httpx.HTTPError:
            return Resolved()
        linked_size = response.headers.get("X-Linked-Size")
        if linked_size and linked_size.isdigit():
            return Resolved(
                int(linked_size), _etag_sha(response.headers.get("X-Linked-Etag")), response.status_code
            )
        if response.is_redirect and "Location" in response.headers:
            url = urljoin(url, response.headers["Location"])
            continue
        if response.status_code >= 400:
            return Resolved(status=response.status_code)
        length = response.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        sha = _etag_sha(response.headers.get("X-Linked-Etag")) or _etag_sha(response.headers.get("ETag"))
        return Resolved(size, sha, response.status_code)
    return Resolved()


def lock_path_for(settings: Settings, workflow: str) -> Path:
    return Path(settings.data_dir) / "provision" / f"{workflow}.lock.json"


def read_lock(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def update_lock(path: Path, workflow: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Merge `entries` ("folder/name" -> size, sha256, source) into the lock file, atomically."""
    files = read_lock(path)
    for key, entry in entries.items():
        merged = dict(files.get(key, {}))
        merged.update({k: v for k, v in entry.items() if v is not None})
        files[key] = merged
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # concurrent provisions may write too
    tmp.write_text(json.dumps({"workflow": workflow, "files": files}, indent=2, sort_keys=True))
    tmp.replace(path)


async def build_plan(
    workflow: Any,
    settings: Settings,
    *,
    mirror_url: str | None = None,
    node_sources: Mapping[str, tuple[str, str]] | None = None,
    comfy_dir: str | None = None,
    resolve: bool = True,
    token_hosts: tuple[str, ...] = DEFAULT_TOKEN_HOSTS,
    http_timeout_s: float = 15.0,
) -> Plan:
    """The plan for `workflow` (an `app.workflows.Workflow`: `.name`, `.models`, `.custom_nodes`).

    `mirror_url` (default `settings.model_mirror_url`) makes every model come from
    `<mirror>/<folder>/<name>`. `node_sources` overrides a node's (git_url, commit), for local repos.
    The HF token (`settings.hf_token`) is only ever sent to `token_hosts`.
    Raises `UpstreamChanged` when a source's sha256 differs from the one in the lock file.
    """
    mirror = (mirror_url or settings.model_mirror_url or "").rstrip("/") or None
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    lock_path = lock_path_for(settings, workflow.name)
    lock = read_lock(lock_path)
    # Percent-encoded: a "#", "?" or space in a name stays part of the path (a nested folder keeps "/").
    urls = [
        f"{mirror}/{quote(m.folder)}/{quote(m.name, safe='')}" if mirror else m.url for m in workflow.models
    ]

    resolved: list[Resolved] = [Resolved()] * len(urls)
    if resolve and urls:
        async with httpx.AsyncClient(timeout=http_timeout_s) as client:
            resolved = list(
                await asyncio.gather(
                    *(resolve_source(client, u, token=token, token_hosts=token_hosts) for u in urls)
                )
            )

    models: list[PlannedModel] = []
    lock_updates: dict[str, dict[str, Any]] = {}
    for m, url, res in zip(workflow.models, urls, resolved, strict=True):
        key = f"{m.folder}/{m.name}"
        locked = lock.get(key, {})
        manifest_sha = (m.sha256 or "").lower() or None
        locked_sha = locked.get("sha256")
        if res.sha256 and locked_sha and res.sha256 != locked_sha and manifest_sha is None:
            raise UpstreamChanged(
                m.name,
                f"{m.name}: the source now has sha256 {res.sha256}, the lock file {lock_path} recorded "
                f"{locked_sha}; delete that entry to accept the new file",
            )
        sha = manifest_sha or res.sha256 or locked_sha
        if res.size:
            size, exact = res.size, True
        elif locked.get("size") and (not manifest_sha or locked_sha == manifest_sha):
            size, exact = int(locked["size"]), True
        else:
            size, exact = m.size, False
        models.append(PlannedModel(m.folder, m.name, url, size, exact, sha, m.url))
        if exact:
            lock_updates[key] = {"size": size, "sha256": sha, "source": m.url}

    overrides = dict(settings.custom_node_sources)
    overrides.update(node_sources or {})
    nodes = []
    for n in workflow.custom_nodes:
        git_url, commit = overrides.get(n.name, (n.git_url, n.commit))
        nodes.append(PlannedNode(n.name, git_url, commit))

    if lock_updates:
        try:
            update_lock(lock_path, workflow.name, lock_updates)
        except OSError as exc:  # a read-only data dir must not block provisioning
            log.warning("could not write the lock file %s: %s", lock_path, exc)
    return Plan(
        workflow=workflow.name,
        models=models,
        nodes=nodes,
        comfy_dir=comfy_dir or settings.comfy_dir,
        parallel=max(1, settings.provision_parallel),
        connections=settings.provision_connections_per_file,
        max_connections=settings.provision_connections_total,
        segment_bytes=settings.provision_segment_mb << 20,
        comfy_url=f"http://127.0.0.1:{settings.comfy_internal_port}/",
        token_hosts=tuple(token_hosts),
        lock_path=lock_path,
    )
