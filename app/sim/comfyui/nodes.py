"""Semantic stand-ins for the nodes the Wan graph and the captured samples use.

Each node is `async fn(ctx, inputs) -> (outputs_tuple, ui_or_None)`. They do what matters to a client:
loaders open real files, LoadImage decodes the upload, samplers tick per step with the configured delay,
VHS_VideoCombine writes a real MP4 under VideoHelperSuite's naming rules and reports it under `gifs`.
Classes without a stand-in run as no-ops (outputs None, no UI), which is enough for validation-only use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import os
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, PngImagePlugin

from app.sim.comfyui.install import ComfyInstall
from app.sim.comfyui.loaders import check_model_file, generic_traceback
from app.sim.comfyui.nodes_base import Audio, Frames, Latent, ModelRef, NodeFailure, Video
from app.sim.comfyui.video import (
    Mp4Writer,
    ending_on,
    moving_frames,
    pad_with_free_box,
    solid_frames,
    still_frames,
)


class NodeContext(Protocol):
    node_id: str
    class_type: str
    prompt_id: str
    install: ComfyInstall
    step_delay_s: float
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    video_pad_bytes: int

    async def tick(self, value: int, total: int, preview_png: bytes | None = None) -> None: ...


NodeFn = Callable[[NodeContext, dict[str, Any]], Awaitable[tuple[tuple[Any, ...], dict[str, Any] | None]]]
NODES: dict[str, NodeFn] = {}


def node(*names: str) -> Callable[[NodeFn], NodeFn]:
    def register(fn: NodeFn) -> NodeFn:
        for name in names:
            NODES[name] = fn
        return fn

    return register


# --- loaders ---------------------------------------------------------------------------------------
def _loader(folder: str, input_name: str, kind: str) -> NodeFn:
    async def load(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
        name = str(inputs[input_name])
        if ctx.class_type == "VAELoader" and name == "pixel_space":
            return (ModelRef(kind, name),), None
        path = ctx.install.find_model(folder, name)
        await asyncio.to_thread(check_model_file, path, folder, name, ctx.class_type)
        return (ModelRef(kind, name),), None

    return load


NODES["UnetLoaderGGUF"] = _loader("diffusion_models", "unet_name", "GGUFModelPatcher")
NODES["UnetLoaderGGUFAdvanced"] = NODES["UnetLoaderGGUF"]
NODES["UNETLoader"] = _loader("diffusion_models", "unet_name", "ModelPatcher")
NODES["CLIPLoader"] = _loader("text_encoders", "clip_name", "CLIP")
NODES["CLIPLoaderGGUF"] = _loader("text_encoders", "clip_name", "CLIP")
NODES["VAELoader"] = _loader("vae", "vae_name", "VAE")
NODES["CLIPVisionLoader"] = _loader("clip_vision", "clip_name", "CLIPVision")


@node("LoraLoaderModelOnly")
async def lora_model_only(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    name = str(inputs["lora_name"])
    await asyncio.to_thread(
        check_model_file, ctx.install.find_model("loras", name), "loras", name, ctx.class_type
    )
    return (inputs["model"],), None


# --- conditioning / model plumbing -------------------------------------------------------------------
@node("CLIPTextEncode")
async def clip_text_encode(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    text = str(inputs.get("text", ""))
    return (ModelRef("Conditioning", text[:60], {"text": text}),), None


@node("ModelSamplingSD3", "ConditioningZeroOut")
async def passthrough(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    value = inputs.get("model", inputs.get("conditioning"))
    return (value,), None


# --- latents and sampling ----------------------------------------------------------------------------
@node("WanImageToVideo")
async def wan_image_to_video(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    latent = Latent(
        width=int(inputs["width"]),
        height=int(inputs["height"]),
        length=int(inputs["length"]),
        batch=int(inputs.get("batch_size", 1)),
        start_image=inputs.get("start_image"),
        prompt=_conditioning_text(inputs.get("positive")),
    )
    return (inputs["positive"], inputs["negative"], latent), None


def _conditioning_text(value: Any) -> str:
    return str(value.extras.get("text", value.name)) if isinstance(value, ModelRef) else ""


@node("EmptyLatentImage")
async def empty_latent(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    return (Latent(int(inputs["width"]), int(inputs["height"]), 1, int(inputs.get("batch_size", 1))),), None


async def _sample(ctx: NodeContext, latent: Any, steps: int, seed: int) -> Latent:
    for step in range(1, steps + 1):
        if ctx.step_delay_s > 0:
            await asyncio.sleep(ctx.step_delay_s)
        await ctx.tick(step, steps)
    if not isinstance(latent, Latent):
        latent = Latent(64, 64)
    return dataclasses.replace(latent, seed=seed or latent.seed, steps_done=[*latent.steps_done, ctx.node_id])


@node("KSamplerAdvanced")
async def ksampler_advanced(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    steps = int(inputs["steps"])
    start, end = int(inputs.get("start_at_step", 0)), min(int(inputs.get("end_at_step", steps)), steps)
    count = max(0, end - start)
    return (await _sample(ctx, inputs["latent_image"], count, int(inputs.get("noise_seed", 0))),), None


@node("KSampler")
async def ksampler(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    return (
        await _sample(ctx, inputs["latent_image"], int(inputs["steps"]), int(inputs.get("seed", 0))),
    ), None


@node("VAEDecode")
async def vae_decode(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    latent = inputs["samples"]
    if not isinstance(latent, Latent):
        raise NodeFailure("TypeError", "'NoneType' object is not subscriptable\n", generic_traceback())
    # the Wan VAE works on 8x8 pixels and 4 frames per latent frame (plus the first one)
    width, height = max(8, latent.width // 8 * 8), max(8, latent.height // 8 * 8)
    frames = ((latent.length - 1) // 4) * 4 + 1 if latent.length > 1 else 1
    # A real model's clip depends on the prompt and the seed: so does the simulated camera move.
    variation = int.from_bytes(
        hashlib.sha256(f"{latent.prompt}|{latent.seed}|{latent.camera}".encode()).digest()[:4], "big"
    )
    frames_out = moving_frames(latent.start_image, width, height, frames * latent.batch, variation=variation)
    if latent.end_image is not None and latent.end_image.count > 0:
        frames_out = ending_on(frames_out, latent.end_image)
    return (frames_out,), None


# --- images ------------------------------------------------------------------------------------------
def _open_input(install: ComfyInstall, name: str) -> Image.Image:
    kind = "input"
    match = re.fullmatch(r"(.*) \[(input|output|temp)\]", name)
    if match:
        name, kind = match.group(1), match.group(2)
    root = install.comfy_dir / kind
    path = (root / name).resolve()
    if os.path.commonpath((str(root), str(path))) != str(root) or not path.is_file():
        raise NodeFailure(
            "FileNotFoundError", f"[Errno 2] No such file or directory: '{path}'\n", generic_traceback()
        )
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:
        raise NodeFailure(
            "PIL.UnidentifiedImageError", f"cannot identify image file '{path}'\n", generic_traceback()
        ) from exc


@node("LoadImage")
async def load_image(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    image = await asyncio.to_thread(_open_input, ctx.install, str(inputs["image"]))
    return (still_frames(image), ModelRef("MASK", "mask")), None


@node("EmptyImage")
async def empty_image(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    return (
        solid_frames(
            int(inputs["width"]),
            int(inputs["height"]),
            int(inputs["batch_size"]),
            int(inputs.get("color", 0)),
        ),
    ), None


@node("ImageScale")
async def image_scale(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    src: Frames = inputs["image"]
    width, height = int(inputs["width"]) or src.width, int(inputs["height"]) or src.height
    return (Frames(src.count, width, height, lambda i: src.frame(i).resize((width, height))),), None


@node("RepeatImageBatch")
async def repeat_image_batch(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    src: Frames = inputs["image"]
    amount = int(inputs["amount"])
    return (Frames(src.count * amount, src.width, src.height, lambda i: src.frame(i % src.count)),), None


@node("ImageFromBatch")
async def image_from_batch(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    """comfy_extras.nodes_images.ImageFromBatch: `batch_index` and `length` clamped to the batch."""
    src: Frames = inputs["image"]
    start = max(0, min(src.count - 1, int(inputs["batch_index"])))
    length = max(0, min(src.count - start, int(inputs["length"])))
    return (Frames(length, src.width, src.height, lambda i: src.frame(start + i)),), None


def _save_prefix(root: Path, prefix: str) -> tuple[Path, str, str]:
    norm = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(norm), os.path.basename(norm)
    folder = (root / subfolder).resolve()
    if os.path.commonpath((str(root.resolve()), str(folder))) != str(root.resolve()):
        raise NodeFailure(
            "Exception",
            "Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {folder}\n         output_dir: {root}\n",
            generic_traceback(),
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, filename, subfolder


def _comfy_counter(folder: Path, filename: str) -> int:
    """SaveImage's counter: max of `<prefix>_<digits>_...` + 1."""
    best = 0
    for existing in os.listdir(folder):
        if existing[: len(filename) + 1].lower() == f"{filename}_".lower():
            head = existing[len(filename) + 1 :].split("_")[0]
            if head.isdigit() and existing[len(filename) + 1 + len(head) :].startswith("_"):
                best = max(best, int(head))
    return best + 1


def _save_images(ctx: NodeContext, frames: Frames, root: Path, prefix: str, kind: str) -> dict[str, Any]:
    folder, filename, subfolder = _save_prefix(root, prefix)
    counter = _comfy_counter(folder, filename)
    results = []
    for index in range(frames.count):
        name = f"{filename}_{counter:05}_.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(ctx.prompt))
        for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
            info.add_text(key, json.dumps(value))
        frames.frame(index).save(folder / name, pnginfo=info, compress_level=4)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": results}


@node("SaveImage")
async def save_image(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    root = ctx.install.comfy_dir / "output"
    ui = await asyncio.to_thread(
        _save_images, ctx, inputs["images"], root, str(inputs.get("filename_prefix", "ComfyUI")), "output"
    )
    return (), ui


@node("PreviewImage")
async def preview_image(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    root = ctx.install.comfy_dir / "temp"
    ui = await asyncio.to_thread(_save_images, ctx, inputs["images"], root, f"ComfyUI_temp_{suffix}", "temp")
    return (), ui


@node("SaveImageWebsocket")
async def save_image_websocket(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    import io

    frames: Frames = inputs["images"]
    for index in range(frames.count):
        buf = io.BytesIO()
        frames.frame(index).save(buf, format="PNG")
        await ctx.tick(index, frames.count, buf.getvalue())
    return (), None


# --- core video nodes --------------------------------------------------------------------------------
@node("CreateVideo")
async def create_video(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    return (Video(inputs["images"], float(inputs.get("fps", 30.0))),), None


def _write_mp4(path: Path, frames: Frames, fps: float) -> None:
    writer = Mp4Writer(path, frames.width, frames.height, fps)
    try:
        for index in range(frames.count):
            writer.add(frames.frame(index))
        writer.close()
    except BaseException:
        writer.abort()
        path.unlink(missing_ok=True)
        raise


@node("SaveVideo")
async def save_video(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    fmt = str(inputs.get("format", "auto"))
    if fmt not in ("auto", "mp4"):
        raise NodeFailure("ValueError", f"'{fmt}' is not a valid VideoContainer\n", generic_traceback())
    video: Video = inputs["video"]
    root = ctx.install.comfy_dir / "output"
    folder, filename, subfolder = _save_prefix(root, str(inputs.get("filename_prefix", "video/ComfyUI")))
    name = f"{filename}_{_comfy_counter(folder, filename):05}_.mp4"
    await asyncio.to_thread(_write_mp4, folder / name, video.frames, video.fps)
    return (), {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}


def _write_webp(path: Path, frames: Frames, fps: float, lossless: bool, quality: int) -> None:
    images = [frames.frame(i) for i in range(frames.count)]
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        lossless=lossless,
        quality=quality,
    )


@node("SaveAnimatedWEBP")
async def save_animated_webp(
    ctx: NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    frames: Frames = inputs["images"]
    root = ctx.install.comfy_dir / "output"
    folder, filename, subfolder = _save_prefix(root, str(inputs.get("filename_prefix", "ComfyUI")))
    name = f"{filename}_{_comfy_counter(folder, filename):05}_.webp"
    await asyncio.to_thread(
        _write_webp,
        folder / name,
        frames,
        float(inputs.get("fps", 6.0)),
        bool(inputs.get("lossless", True)),
        int(inputs.get("quality", 80)),
    )
    return (), {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}


# --- VideoHelperSuite --------------------------------------------------------------------------------
def _vhs_counter(folder: Path, filename: str) -> int:
    matcher = re.compile(f"{re.escape(filename)}_(\\d+)\\D*\\..+", re.IGNORECASE)
    best = 0
    for existing in os.listdir(folder):
        match = matcher.fullmatch(existing)
        if match:
            best = max(best, int(match.group(1)))
    return best + 1


@node("VHS_VideoCombine")
async def vhs_video_combine(
    ctx: NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    frames: Frames = inputs["images"]
    fmt = str(inputs.get("format", "image/gif"))
    container = "webm" if fmt == "video/webm" else "mp4"
    if not (fmt.startswith("video/") and (fmt.endswith("mp4") or fmt == "video/webm")):
        raise NodeFailure(
            "Exception",
            f"The simulated VideoHelperSuite only writes mp4 and webm, not {fmt}\n",
            generic_traceback(),
        )
    frame_rate = float(inputs.get("frame_rate", 8))
    audio = inputs.get("audio")
    audio = audio if isinstance(audio, Audio) else None
    if audio is not None and bool(inputs.get("trim_to_audio", False)):
        # ffmpeg -shortest: the file ends with the audio when the audio is the shorter stream
        keep = max(1, math.ceil(audio.seconds * frame_rate))
        if keep < frames.count:
            src = frames
            frames = Frames(keep, src.width, src.height, src.render)
    save_output = bool(inputs.get("save_output", True))
    kind = "output" if save_output else "temp"
    root = ctx.install.comfy_dir / kind
    folder, filename, subfolder = _save_prefix(root, str(inputs.get("filename_prefix", "AnimateDiff")))
    counter = _vhs_counter(folder, filename)
    first_image_file = f"{filename}_{counter:05}.png"
    if bool(inputs.get("save_metadata", True)) and frames.count:
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(ctx.prompt))
        info.add_text("comment", "comfyfleet simulated")
        await asyncio.to_thread(
            frames.frame(0).save, folder / first_image_file, pnginfo=info, compress_level=4
        )
    video = folder / f"{filename}_{counter:05}.{container}"
    writer = await asyncio.to_thread(
        Mp4Writer,
        video,
        frames.width,
        frames.height,
        frame_rate,
        int(inputs.get("crf", 19)),
        audio_path=Path(audio.path) if audio is not None else None,
        container=container,
    )
    try:
        for index in range(frames.count):
            await asyncio.to_thread(lambda i=index: writer.add(frames.frame(i)))
            await ctx.tick(index + 1, frames.count)
        await asyncio.to_thread(writer.close)
    except BaseException:
        await asyncio.to_thread(writer.abort)
        video.unlink(missing_ok=True)
        raise
    if ctx.video_pad_bytes > 0:
        await asyncio.to_thread(pad_with_free_box, video, ctx.video_pad_bytes)
    preview = {
        "filename": video.name,
        "subfolder": subfolder,
        "type": kind,
        "format": fmt,
        "frame_rate": frame_rate,
        "workflow": first_image_file,
        "fullpath": str(video),
    }
    return ((save_output, [str(folder / first_image_file), str(video)]),), {"gifs": [preview]}


async def generic(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    outputs = ctx.install.classes.get(ctx.class_type, {}).get("output", [])
    return tuple(None for _ in outputs), None


# --- the Wan 2.2 family (issue 11) -------------------------------------------------------------------
def _latent_t(latent: Latent) -> int:
    """Latent frames of a Wan latent (4 pixel frames each, plus the first)."""
    return (max(1, latent.length) - 1) // 4 + 1


def _with_latent_t(latent: Latent, t: int) -> Latent:
    return dataclasses.replace(latent, length=4 * (max(1, t) - 1) + 1)


def _latent_node(*, conditioning: bool):
    async def make(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
        start = inputs.get("start_image", inputs.get("ref_image"))
        latent = Latent(
            width=int(inputs["width"]),
            height=int(inputs["height"]),
            length=int(inputs["length"]),
            batch=int(inputs.get("batch_size", 1)),
            start_image=start if isinstance(start, Frames) else None,
            prompt=_conditioning_text(inputs.get("positive")),
            end_image=inputs.get("end_image") if isinstance(inputs.get("end_image"), Frames) else None,
        )
        if conditioning:
            return (inputs["positive"], inputs["negative"], latent), None
        return (latent,), None

    return make


NODES["WanFirstLastFrameToVideo"] = _latent_node(conditioning=True)
NODES["WanSoundImageToVideo"] = _latent_node(conditioning=True)
NODES["Wan22ImageToVideoLatent"] = _latent_node(conditioning=False)
NODES["EmptyHunyuanLatentVideo"] = _latent_node(conditioning=False)


@node("WanSoundImageToVideoExtend")
async def wan_sound_extend(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    """One more chunk of `length` frames, the size of the video so far (its latent is `video_latent`)."""
    previous = inputs["video_latent"]
    if not isinstance(previous, Latent):
        raise NodeFailure("TypeError", "'NoneType' object is not subscriptable\n", generic_traceback())
    ref = inputs.get("ref_image")
    chunk = Latent(
        previous.width,
        previous.height,
        int(inputs["length"]),
        previous.batch,
        start_image=ref if isinstance(ref, Frames) else previous.start_image,
        prompt=_conditioning_text(inputs.get("positive")),
    )
    return (inputs["positive"], inputs["negative"], chunk), None


@node("LatentConcat")
async def latent_concat(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    a, b = inputs["samples1"], inputs["samples2"]
    if not isinstance(a, Latent) or not isinstance(b, Latent):
        raise NodeFailure("TypeError", "'NoneType' object is not subscriptable\n", generic_traceback())
    if str(inputs.get("dim", "t")).lstrip("-") != "t":
        return (a,), None
    return (_with_latent_t(a, _latent_t(a) + _latent_t(b)),), None


@node("LatentCut")
async def latent_cut(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    src = inputs["samples"]
    if not isinstance(src, Latent):
        raise NodeFailure("TypeError", "'NoneType' object is not subscriptable\n", generic_traceback())
    if str(inputs.get("dim", "t")).lstrip("-") != "t":
        return (src,), None
    total = _latent_t(src)
    index = int(inputs.get("index", 0))
    index = max(0, min(total - 1, index if index >= 0 else total + index))
    amount = max(1, min(total - index, int(inputs.get("amount", 1))))
    return (_with_latent_t(src, amount),), None


@node("WanCameraEmbedding")
async def wan_camera_embedding(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    pose = str(inputs["camera_pose"])
    width, height, length = int(inputs["width"]), int(inputs["height"]), int(inputs["length"])
    return (ModelRef("WAN_CAMERA_EMBEDDING", pose, {"pose": pose}), width, height, length), None


@node("WanCameraImageToVideo")
async def wan_camera_i2v(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    (positive, negative, latent), _ = await _latent_node(conditioning=True)(ctx, inputs)
    camera = inputs.get("camera_conditions")
    pose = camera.extras.get("pose") if isinstance(camera, ModelRef) else None
    return (positive, negative, dataclasses.replace(latent, camera=pose)), None


@node("LoadAudio")
async def load_audio(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    name = str(inputs["audio"])
    root = ctx.install.comfy_dir / "input"
    path = (root / name).resolve()
    if os.path.commonpath((str(root), str(path))) != str(root) or not path.is_file():
        raise NodeFailure(
            "FileNotFoundError", f"[Errno 2] No such file or directory: '{path}'\n", generic_traceback()
        )
    try:
        seconds, rate = await asyncio.to_thread(_measure_audio, path)
    except Exception as exc:
        raise NodeFailure(
            "RuntimeError", f"Failed to decode audio file {path}: {type(exc).__name__}\n", generic_traceback()
        ) from exc
    return (Audio(str(path), seconds, rate),), None


def _measure_audio(path: Path) -> tuple[float, int]:
    import av

    samples, rate = 0, 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            rate = rate or int(frame.sample_rate)
            samples += int(frame.samples)
    if not rate:
        raise ValueError("no audio samples")
    return samples / rate, rate


@node("AudioEncoderLoader")
async def audio_encoder_loader(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    name = str(inputs["audio_encoder_name"])
    path = ctx.install.find_model("audio_encoders", name)
    await asyncio.to_thread(check_model_file, path, "audio_encoders", name, ctx.class_type)
    return (ModelRef("AudioEncoderModel", name),), None


@node("AudioEncoderEncode")
async def audio_encoder_encode(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    audio = inputs.get("audio")
    return (ModelRef("AUDIO_ENCODER_OUTPUT", "wav2vec2", {"audio": audio}),), None
