"""What a ComfyUI directory "has installed": custom nodes, model files, input images.

A real ComfyUI builds its node list at boot from `custom_nodes/` and lists model files from disk each
time `/object_info` is asked; this module does the same against the captured object_info, so a missing
custom node or a half-downloaded model shows up exactly as it would on a rented instance.
"""

from __future__ import annotations

import copy
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORE_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
GGUF_EXTENSIONS = frozenset({".gguf"})

# ComfyUI's folder_paths keys (in /models order) -> directories under models/
CORE_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "configs": ("configs",),
    "loras": ("loras",),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("unet", "diffusion_models"),
    "clip_vision": ("clip_vision",),
    "style_models": ("style_models",),
    "embeddings": ("embeddings",),
    "diffusers": ("diffusers",),
    "vae_approx": ("vae_approx",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",),
    "upscale_models": ("upscale_models",),
    "custom_nodes": (),
    "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",),
    "classifiers": ("classifiers",),
    "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",),
}
CONFIG_EXTENSIONS = frozenset({".yaml"})
GGUF_MODULE = "ComfyUI-GGUF"
VHS_MODULE = "comfyui-videohelpersuite"

# (class, input) -> (folder key, extensions); folder key "unet_gguf"/"clip_gguf" are ComfyUI-GGUF's
LOADER_INPUTS: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    ("UnetLoaderGGUF", "unet_name"): ("diffusion_models", GGUF_EXTENSIONS),
    ("UnetLoaderGGUFAdvanced", "unet_name"): ("diffusion_models", GGUF_EXTENSIONS),
    ("UNETLoader", "unet_name"): ("diffusion_models", CORE_EXTENSIONS),
    ("CLIPLoader", "clip_name"): ("text_encoders", CORE_EXTENSIONS),
    ("CLIPLoaderGGUF", "clip_name"): ("text_encoders", CORE_EXTENSIONS | GGUF_EXTENSIONS),
    ("DualCLIPLoader", "clip_name1"): ("text_encoders", CORE_EXTENSIONS),
    ("DualCLIPLoader", "clip_name2"): ("text_encoders", CORE_EXTENSIONS),
    ("DualCLIPLoaderGGUF", "clip_name1"): ("text_encoders", CORE_EXTENSIONS | GGUF_EXTENSIONS),
    ("DualCLIPLoaderGGUF", "clip_name2"): ("text_encoders", CORE_EXTENSIONS | GGUF_EXTENSIONS),
    ("VAELoader", "vae_name"): ("vae", CORE_EXTENSIONS),
    ("LoraLoaderModelOnly", "lora_name"): ("loras", CORE_EXTENSIONS),
    ("LoraLoader", "lora_name"): ("loras", CORE_EXTENSIONS),
    ("CLIPVisionLoader", "clip_name"): ("clip_vision", CORE_EXTENSIONS),
    ("CheckpointLoaderSimple", "ckpt_name"): ("checkpoints", CORE_EXTENSIONS),
}


def _walk(root: Path, extensions: frozenset[str] | None) -> list[str]:
    """Files under root as ComfyUI names them (relative, '/'-joined), filtered by extension."""
    found: list[str] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            if extensions is not None and Path(name).suffix.lower() not in extensions:
                continue
            rel = Path(dirpath, name).relative_to(root)
            found.append(rel.as_posix())
    return found


@dataclass
class ComfyInstall:
    """One ComfyUI directory plus the object_info of every node that could be installed in it."""

    comfy_dir: Path
    object_info: dict[str, Any]
    custom_nodes: dict[str, str] = field(default_factory=dict)  # module name in object_info -> dir name
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.comfy_dir = Path(self.comfy_dir).resolve()
        for sub in ("input", "output", "temp", "custom_nodes", "models"):
            (self.comfy_dir / sub).mkdir(parents=True, exist_ok=True)
        self.scan_nodes()

    # --- boot-time scan -----------------------------------------------------------------------
    def scan_nodes(self) -> None:
        """Which node classes exist, as after a (re)start: core ones always, custom ones when their
        directory (or single-file module) sits under custom_nodes/ (matched case-insensitively)."""
        present: dict[str, str] = {}
        cn_dir = self.comfy_dir / "custom_nodes"
        for entry in sorted(cn_dir.iterdir()) if cn_dir.is_dir() else []:
            name = entry.name
            if name.startswith(".") or name == "__pycache__" or name.endswith(".disabled"):
                continue
            if entry.is_file():
                if entry.suffix != ".py":
                    continue
                name = entry.stem
            present[name.lower()] = name
        installed: dict[str, str] = {}
        classes: dict[str, dict[str, Any]] = {}
        for cls, info in self.object_info.items():
            module = str(info.get("python_module", ""))
            if module.startswith("custom_nodes."):
                wanted = module.split(".", 1)[1]
                actual = present.get(wanted.lower())
                if actual is None:
                    continue
                installed[wanted] = actual
                info = {**info, "python_module": f"custom_nodes.{actual}"}
            classes[cls] = info
        self.custom_nodes = installed
        self.classes = classes

    def has_module(self, module: str) -> bool:
        return module.lower() in {m.lower() for m in self.custom_nodes}

    # --- live file lists ------------------------------------------------------------------------
    def dir_for_type(self, kind: str) -> Path | None:
        """input/, output/ or temp/ for ComfyUI's `type` values; None for anything else."""
        if kind in ("input", "output", "temp"):
            return self.comfy_dir / kind
        return None

    def folder_dirs(self, key: str) -> list[Path]:
        models = self.comfy_dir / "models"
        if key in ("unet_gguf",):
            return [models / d for d in CORE_FOLDERS["diffusion_models"]]
        if key in ("clip_gguf",):
            return [models / d for d in CORE_FOLDERS["text_encoders"]]
        return [models / d for d in CORE_FOLDERS.get(key, ())]

    def filenames(self, key: str, extensions: frozenset[str] | None) -> list[str]:
        names: set[str] = set()
        for root in self.folder_dirs(key):
            names.update(_walk(root, extensions))
        return sorted(names)

    def find_model(self, key: str, name: str) -> Path | None:
        """The file a loader would open for this combo value (first folder wins, like ComfyUI)."""
        if name.startswith("/") or ".." in Path(name).parts:
            return None
        for root in self.folder_dirs(key):
            path = root / name
            if path.is_file():
                return path
        return None

    def input_images(self) -> list[str]:
        """LoadImage's list: top-level files of input/ whose type is an image, sorted."""
        root = self.comfy_dir / "input"
        out = []
        for entry in root.iterdir() if root.is_dir() else []:
            if entry.is_file():
                mime = mimetypes.guess_type(entry.name)[0] or ""
                if mime.startswith("image"):
                    out.append(entry.name)
        return sorted(out)

    def input_audio(self) -> list[str]:
        """LoadAudio's list: top-level files of input/ whose type is audio or video, sorted."""
        root = self.comfy_dir / "input"
        out = []
        for entry in root.iterdir() if root.is_dir() else []:
            if entry.is_file():
                mime = mimetypes.guess_type(entry.name)[0] or ""
                if mime.startswith(("audio", "video")):
                    out.append(entry.name)
        return sorted(out)

    def model_folders(self) -> list[str]:
        keys = list(CORE_FOLDERS)
        if self.has_module(VHS_MODULE):
            keys.append("VHS_video_formats")
        if self.has_module(GGUF_MODULE):
            keys += ["unet_gguf", "clip_gguf"]
        return keys

    def list_folder(self, key: str) -> list[str] | None:
        """`GET /models/{folder}`; None = not a folder key (404), e.g. the legacy aliases unet/clip."""
        if key not in self.model_folders():
            return None
        if key == "custom_nodes":
            return []
        if key == "configs":
            return self.filenames(key, CONFIG_EXTENSIONS)
        if key in ("unet_gguf", "clip_gguf"):
            return self.filenames(key, GGUF_EXTENSIONS)
        if key == "VHS_video_formats":
            combo = self.classes.get("VHS_VideoCombine", {}).get("input", {}).get("required", {})
            formats = combo.get("format", [[]])[0]
            return sorted(f"{f.split('/', 1)[1]}.json" for f in formats if f.startswith("video/"))
        return self.filenames(key, CORE_EXTENSIONS)

    def _combo_values(self, cls: str, input_name: str) -> list[str] | None:
        if cls == "LoadImage" and input_name == "image":
            return self.input_images()
        if cls == "LoadAudio" and input_name == "audio":
            return self.input_audio()
        spec = LOADER_INPUTS.get((cls, input_name))
        if spec is None:
            return None
        values = self.filenames(*spec)
        if cls == "VAELoader":
            values = [*values, "pixel_space"]
        return values

    def node_info(self, cls: str) -> dict[str, Any] | None:
        """One class's object_info with its file combos filled from disk, or None if not installed."""
        info = self.classes.get(cls)
        if info is None:
            return None
        patched: dict[str, Any] | None = None
        for section in ("required", "optional"):
            for input_name in list(info.get("input", {}).get(section, {})):
                values = self._combo_values(cls, input_name)
                if values is None:
                    continue
                if patched is None:
                    patched = copy.deepcopy(info)
                spec = patched["input"][section][input_name]
                patched["input"][section][input_name] = [values, *spec[1:]]
        return patched if patched is not None else info

    def effective_object_info(self) -> dict[str, Any]:
        return {cls: self.node_info(cls) for cls in self.classes}
