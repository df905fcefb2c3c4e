"""Dropping a clip's first frames inside its graph, before the video encoder.

A story's segment k+1 starts from segment k's last frame, and an image-to-video model reproduces its start
image as frame 0, so that frame would appear twice in the joined video. An H.264 stream cannot lose its
first (key) frame by cutting packets, so the frame is removed where it costs nothing: between the decoder
and the encoder, with ComfyUI's core `ImageFromBatch` node (comfy_extras.nodes_images; inputs `image`,
`batch_index` 0..4095, `length` 1..4096; it clamps both to the batch it gets, so `length` 4096 means
"everything from `batch_index` on"). This works for any workflow whose video node takes its frames on an
`images` input (VideoHelperSuite's VHS_VideoCombine, core CreateVideo, SaveAnimatedWEBP), without a
second graph per workflow.
"""

from __future__ import annotations

import copy
from typing import Any

from app.errors import ValidationError

TRIM_NODE_ID = "comfyfleet_drop_leading_frames"
TRIM_NODE_CLASS = "ImageFromBatch"
FRAMES_INPUTS = ("images", "image")
MAX_BATCH_INDEX = 4095  # ImageFromBatch's batch_index maximum
MAX_LENGTH = 4096  # ImageFromBatch's length maximum


def frames_input(graph: dict[str, Any], video_node: str) -> str | None:
    """The video node's input that carries the frames as a link, or None when it has none."""
    node = graph.get(video_node) or {}
    inputs = node.get("inputs") or {}
    for name in FRAMES_INPUTS:
        value = inputs.get(name)
        if isinstance(value, list) and len(value) == 2:
            return name
    return None


def can_drop_leading_frames(workflow: Any) -> bool:
    """Whether `workflow`'s graph lets `drop_leading_frames` insert the trim before its encoder."""
    return frames_input(workflow.graph, workflow.video_node) is not None


def drop_leading_frames(graph: dict[str, Any], video_node: str, count: int) -> dict[str, Any]:
    """A copy of `graph` whose video node encodes the frames from index `count` on."""
    if count <= 0:
        return graph
    if count > MAX_BATCH_INDEX:
        raise ValidationError("drop_first_frames", f"must be at most {MAX_BATCH_INDEX} (got {count})")
    name = frames_input(graph, video_node)
    if name is None:
        raise ValidationError(
            "workflow",
            f"its video node {video_node} takes no frames on an `images` input, so a story segment cannot "
            "drop the frame it repeats",
        )
    out = copy.deepcopy(graph)
    if TRIM_NODE_ID in out:
        raise ValueError(f"the graph already has a node {TRIM_NODE_ID}")
    out[TRIM_NODE_ID] = {
        "class_type": TRIM_NODE_CLASS,
        "inputs": {"image": out[video_node]["inputs"][name], "batch_index": count, "length": MAX_LENGTH},
        "_meta": {"title": "comfyfleet: drop the frame the previous story segment ended on"},
    }
    out[video_node]["inputs"][name] = [TRIM_NODE_ID, 0]
    return out
