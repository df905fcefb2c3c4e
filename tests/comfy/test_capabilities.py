"""Capability checks against the real captured object_info: missing node types and model files."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import pytest

from app.comfy.capabilities import check_object_info, combo_values, missing_models
from app.comfy.errors import MissingModelError, MissingNodeError

WAN_MODELS = [
    ("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", "unet"),
    ("Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf", "diffusion_models"),
    ("nsfw_wan_umt5-xxl_fp8_scaled.safetensors", "text_encoders"),
    ("wan_2.1_vae.safetensors", "vae"),
    ("wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors", "loras"),
]


@dataclass
class _CustomNode:
    name: str
    node_types: list[str]


@pytest.fixture(scope="module")
def object_info(fixtures_dir):
    return json.loads((fixtures_dir / "comfyui" / "object_info_wan.json").read_text())


@pytest.fixture(scope="module")
def wan_node_types(fixtures_dir):
    graph = json.loads((fixtures_dir / "comfyui" / "wan22_i2v_gguf_api.json").read_text())
    return {n["class_type"] for n in graph.values()}


def test_everything_present_passes(object_info, wan_node_types):
    check_object_info(object_info, wan_node_types, WAN_MODELS)


def test_missing_custom_node_names_type_and_provider(object_info, wan_node_types):
    info = {k: v for k, v in object_info.items() if k != "VHS_VideoCombine"}
    with pytest.raises(MissingNodeError) as exc:
        check_object_info(
            info, wan_node_types, WAN_MODELS, [_CustomNode("ComfyUI-VideoHelperSuite", ["VHS_VideoCombine"])]
        )
    assert exc.value.node_types == ["VHS_VideoCombine"]
    assert "VHS_VideoCombine (provided by custom node ComfyUI-VideoHelperSuite)" in str(exc.value)


def test_missing_model_file_names_file_and_folder(object_info, wan_node_types):
    info = copy.deepcopy(object_info)
    for loader in ("UnetLoaderGGUF", "UnetLoaderGGUFAdvanced"):  # both list the same folder
        info[loader]["input"]["required"]["unet_name"][0].remove("Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf")
    with pytest.raises(MissingModelError) as exc:
        check_object_info(info, wan_node_types, WAN_MODELS)
    assert exc.value.missing == [("diffusion_models", "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf")]
    assert "models/diffusion_models/Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf" in str(exc.value)


def test_model_of_unknown_folder_found_in_any_combo(object_info):
    assert missing_models(object_info, [("wan_2.1_vae.safetensors", "my_custom_folder")]) == []
    assert missing_models(object_info, [("absent.bin", "my_custom_folder")]) == [
        ("my_custom_folder", "absent.bin")
    ]


def test_v3_combo_options_are_read():
    assert combo_values(["COMBO", {"options": ["a", "b"]}]) == ["a", "b"]
    assert combo_values([["x"], {}]) == ["x"]
    assert combo_values(["INT", {"min": 0}]) is None
