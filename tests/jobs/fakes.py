"""Small stand-ins for the other rooms, shaped like their contracts (docs/CONTRACTS.md).

They are honest about time: a fake GPU runs one prompt at a time, so queue-ahead and idle gaps are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import random
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from app.errors import ComfyfleetError, ValidationError
from app.pool.ports import ComfyTarget, Progress
from app.pool.provider import CreateRequest, Instance, InstanceState
from app.store.base import ObjectMissing
from app.workflows.inputs import Inputs

# --- workflows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeParams:
    prompt: str
    negative_prompt: str
    num_frames: int
    width: int
    height: int
    steps: int
    cfg_scale: float
    seed: int
    fps: int

    def with_resolved_seed(self, rng=None) -> FakeParams:
        if self.seed != -1:
            return self
        return replace(self, seed=(rng or random).randint(0, 2**48))

    def normalized(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FakeWorkflow:
    video_node = "30"
    last_frame_node = None
    inputs = Inputs()  # a start image, nothing else
    # An image-to-video workflow a story can chain: a start image input, and a video node taking its
    # frames on `images` (so a later segment's repeated first frame can be cut before the encoder).
    bindings: ClassVar[dict[str, list[tuple[str, str]]]] = {"image": [("10", "image")]}
    graph: ClassVar[dict[str, Any]] = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "30": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["25", 0]}},
    }

    def __init__(self, name: str = "wan22_i2v_lightx2v_gguf", disk_bytes: int = 26 * 10**9) -> None:
        self.progress_nodes = ["57", "58"]
        self.name = name
        self.version = "1"
        self.graph_sha256 = "g" * 64
        self.disk_bytes = disk_bytes
        self.node_types = {"UnetLoaderGGUF", "VHS_VideoCombine"}

    def validate(self, raw: dict[str, Any], image_size: tuple[int, int] | None = None) -> FakeParams:
        prompt = raw.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValidationError("prompt", "must not be empty")
        frames = int(raw.get("num_frames", 81))
        if frames % 4 != 1 or not 5 <= frames <= 161:
            raise ValidationError("num_frames", "must be 4n+1 between 5 and 161")
        steps = int(raw.get("steps", 4))
        if not 1 <= steps <= 50:
            raise ValidationError("steps", "must be between 1 and 50")
        width, height = raw.get("width"), raw.get("height")
        iw, ih = image_size or (832, 480)
        if width is None and height is None:
            if iw >= ih:
                height, width = 480, round(480 * iw / ih / 16) * 16
            else:
                width, height = 480, round(480 * ih / iw / 16) * 16
        elif height is None:
            height = round(int(width) * ih / iw / 16) * 16
        elif width is None:
            width = round(int(height) * iw / ih / 16) * 16
        for fname, v in (("width", width), ("height", height)):
            if int(v) % 16 or not 128 <= int(v) <= 1280:
                raise ValidationError(fname, "must be a multiple of 16 between 128 and 1280")
        return FakeParams(
            prompt=prompt,
            negative_prompt=raw.get("negative_prompt", ""),
            num_frames=frames,
            width=int(width),
            height=int(height),
            steps=steps,
            cfg_scale=float(raw.get("cfg_scale", 1.0)),
            seed=int(raw.get("seed", -1)),
            fps=int(raw.get("fps", 16)),
        )

    def render(self, params: FakeParams, image_name: str, filename_prefix: str, **_files: Any) -> dict:
        assert params.seed != -1
        return {
            **copy.deepcopy(self.graph),
            "image": image_name,
            "prefix": filename_prefix,
            "params": params.normalized(),
        }


def workflow_loader(*workflows: FakeWorkflow):
    table = {w.name: w for w in (workflows or (FakeWorkflow(),))}

    def get(name: str) -> FakeWorkflow:
        if name not in table:
            raise ValidationError("workflow", f"unknown workflow {name!r}; known: {sorted(table)}")
        return table[name]

    return get


# --- provider, preparer, ledger --------------------------------------------------------------------


class FakeProvider:
    name = "fake"

    def __init__(self, *, price: float = 0.5, can_create: bool = True, ready_delay: float = 0.0) -> None:
        self.can_create = can_create
        self.price = price
        self.ready_delay = ready_delay
        self.instances: dict[str, Instance] = {}
        self.created: list[str] = []
        self.destroyed: list[str] = []
        self.fail_create: Exception | None = None
        self.fail_list: Exception | None = None
        self.ledger: FakeLedger | None = None
        self._n = 0

    def add(self, state: InstanceState = InstanceState.READY, *, record: bool = True, **kw) -> Instance:
        self._n += 1
        inst = Instance(
            provider=self.name,
            id=f"i{self._n}",
            label=f"comfyfleet-test-i{self._n}",
            state=state,
            price_per_hour=self.price,
            **kw,
        )
        self.instances[inst.id] = inst
        if record and self.ledger is not None:
            self.ledger.rows[inst.id] = inst
        return inst

    async def list(self) -> list[Instance]:
        if self.fail_list:
            raise self.fail_list
        return [i for i in self.instances.values() if i.state is not InstanceState.DESTROYED]

    async def create(self, request: CreateRequest) -> Instance:
        await asyncio.sleep(0)
        if self.fail_create:
            raise self.fail_create
        inst = self.add(InstanceState.BOOTING)
        self.created.append(inst.id)
        return inst

    async def wait_ready(self, instance: Instance, deadline: float) -> Instance:
        await asyncio.sleep(self.ready_delay)
        instance.state = InstanceState.PROVISIONING
        return instance

    async def destroy(self, instance: Instance) -> None:
        self.destroyed.append(instance.id)
        instance.state = InstanceState.DESTROYED
        if instance.id in self.instances:
            self.instances[instance.id].state = InstanceState.DESTROYED


class FakeLedger:
    def __init__(self) -> None:
        self.rows: dict[str, Instance] = {}
        self.updates = 0

    async def get(self, id: str) -> Instance | None:
        return self.rows.get(id)

    async def update(self, instance: Instance) -> None:
        self.updates += 1
        self.rows[instance.id] = instance

    async def list(self, alive_only: bool = True) -> list[Instance]:
        return [i for i in self.rows.values() if i.alive or not alive_only]

    async def mark_destroyed(self, id: str) -> None:
        if id in self.rows:
            self.rows[id].state = InstanceState.DESTROYED


class FakePreparer:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self.released: list[str] = []
        self.fail: Exception | None = None

    async def prepare(self, instance: Instance, workflow: Any, on_progress) -> ComfyTarget:
        self.calls.append((instance.id, workflow.name))
        total = 4
        for i in range(total):
            on_progress(
                Progress("provisioning", i / total, {"bytes_done": i * 100, "bytes_total": total * 100})
            )
            await asyncio.sleep(self.delay / total)
        if self.fail:
            raise self.fail
        on_progress(Progress("provisioning", 1.0, {"bytes_done": 400, "bytes_total": 400}))
        return ComfyTarget(url=f"fake://{instance.id}")

    async def release(self, instance: Instance) -> None:
        self.released.append(instance.id)


# --- ComfyUI -------------------------------------------------------------------------------------


class PromptFailed(ComfyfleetError):
    kind = "comfy_execution_error"


@dataclass
class FakeGPU:
    """One ComfyUI: prompts execute one at a time, in submission order."""

    url: str
    step_delay: float = 0.0
    steps: int = 4
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    prompts: dict[str, str] = field(default_factory=dict)  # prompt id -> pending|running|done|cancelled|error
    done_events: dict[str, asyncio.Event] = field(default_factory=dict)
    executions: list[tuple[str, float, float]] = field(default_factory=list)  # (prompt, start, end)
    submitted_at: dict[str, float] = field(default_factory=dict)
    fail_next: str | None = None
    cancels: list[str] = field(default_factory=list)
    uploads: int = 0
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    listeners: dict[str, Any] = field(default_factory=dict)


class FakeComfy:
    """A ComfyConnector: `async with comfy(target) as session`."""

    def __init__(self, step_delay: float = 0.0) -> None:
        self.step_delay = step_delay
        self.gpus: dict[str, FakeGPU] = {}
        self.runs = 0

    def gpu(self, url: str) -> FakeGPU:
        if url not in self.gpus:
            self.gpus[url] = FakeGPU(url, step_delay=self.step_delay)
        return self.gpus[url]

    @contextlib.asynccontextmanager
    async def __call__(self, target: ComfyTarget):
        yield FakeSession(self, self.gpu(target.url))


class FakeSession:
    def __init__(self, comfy: FakeComfy, gpu: FakeGPU) -> None:
        self.comfy, self.gpu = comfy, gpu

    async def upload_image(self, path: Path) -> str:
        self.gpu.uploads += 1
        return path.name

    async def run(
        self, graph: dict, *, deadline: float, on_progress, on_submitted, progress_nodes, keep_on_cancel=None
    ) -> dict:
        self.comfy.runs += 1
        gpu = self.gpu
        prompt_id = uuid.uuid4().hex
        on_submitted(prompt_id)
        gpu.prompts[prompt_id] = "pending"
        gpu.submitted_at[prompt_id] = time.monotonic()
        gpu.done_events[prompt_id] = asyncio.Event()
        gpu.listeners[prompt_id] = on_progress
        # The GPU works on its own: a client that disappears (SIGKILL) does not stop the prompt.
        gpu.tasks[prompt_id] = asyncio.get_running_loop().create_task(self._execute(prompt_id))
        return await asyncio.shield(gpu.tasks[prompt_id])

    async def _execute(self, prompt_id: str) -> dict:
        gpu = self.gpu

        def on_progress(p):
            listener = gpu.listeners.get(prompt_id)
            if listener is not None:
                listener(p)

        async with gpu.lock:
            if gpu.prompts[prompt_id] == "cancelled":
                raise PromptFailed(f"prompt {prompt_id} was cancelled")
            gpu.prompts[prompt_id] = "running"
            start = time.monotonic()
            try:
                for step in range(gpu.steps):
                    await asyncio.sleep(gpu.step_delay)
                    if gpu.prompts[prompt_id] == "cancelled":
                        raise PromptFailed(f"prompt {prompt_id} was interrupted")
                    on_progress(
                        Progress("sampling", (step + 1) / gpu.steps, {"step": step + 1, "steps": gpu.steps})
                    )
                if gpu.fail_next:
                    msg, gpu.fail_next = gpu.fail_next, None
                    gpu.prompts[prompt_id] = "error"
                    raise PromptFailed(msg)
                gpu.prompts[prompt_id] = "done"
            finally:
                gpu.executions.append((prompt_id, start, time.monotonic()))
                gpu.done_events[prompt_id].set()
        return {"prompt_id": prompt_id}

    async def attach(self, prompt_id: str, *, deadline: float, on_progress) -> dict | None:
        status = self.gpu.prompts.get(prompt_id)
        if status is None or status in ("cancelled", "error"):
            return None
        self.gpu.listeners[prompt_id] = on_progress
        await self.gpu.done_events[prompt_id].wait()
        return {"prompt_id": prompt_id} if self.gpu.prompts[prompt_id] == "done" else None

    async def cancel(self, prompt_id: str) -> None:
        self.gpu.cancels.append(prompt_id)
        if self.gpu.prompts.get(prompt_id) in ("pending", "running"):
            self.gpu.prompts[prompt_id] = "cancelled"

    async def download_outputs(self, result: dict, dest_dir: Path) -> list[Path]:
        video = dest_dir / f"{result['prompt_id']}.mp4"
        meta = dest_dir / f"{result['prompt_id']}.png"

        def write() -> None:
            video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 1000)
            meta.write_bytes(b"workflow png")

        await asyncio.to_thread(write)
        return [meta, video]

    async def extract_last_frame(self, video_path: Path, png_path: Path) -> None:
        await asyncio.to_thread(png_path.write_bytes, png_bytes(32, 32))


# --- store ---------------------------------------------------------------------------------------


@dataclass
class StoredObject:
    key: str
    size: int
    content_type: str
    metadata: dict


class FakeStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects: dict[str, StoredObject] = {}
        self.puts = 0

    async def put(self, path: Path, key: str, content_type: str, metadata: dict) -> StoredObject:
        self.puts += 1
        dest = self.root / key

        def copy() -> int:  # like LocalStore/R2Store: file work off the event loop
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            return dest.stat().st_size

        obj = StoredObject(key, await asyncio.to_thread(copy), content_type, dict(metadata))
        self.objects[key] = obj
        return obj

    async def head(self, key: str) -> StoredObject | None:
        return self.objects.get(key)

    async def url(self, key: str) -> str:
        return f"http://store.test/{key}"

    async def get_to_file(self, key: str, dest: Path) -> int:
        """Read an object back (a story's segments), as LocalStore and R2Store do."""
        if key not in self.objects:
            raise ObjectMissing(f"{key} is not in the fake store")

        def copy_out() -> int:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / key, dest)
            return dest.stat().st_size

        return await asyncio.to_thread(copy_out)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)


# --- images --------------------------------------------------------------------------------------


def png_bytes(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()
