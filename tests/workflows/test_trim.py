"""Dropping a story segment's first frame in the graph: the real node schemas accept the result."""

from __future__ import annotations

import random

import pytest

from app.comfy.graph_check import validate_prompt
from app.config import get_settings
from app.errors import ValidationError
from app.workflows import get_workflow
from app.workflows.trim import (
    TRIM_NODE_CLASS,
    TRIM_NODE_ID,
    can_drop_leading_frames,
    drop_leading_frames,
)
from tests.workflows.conftest import SHIPPED


@pytest.fixture
def rendered():
    wf = get_workflow(SHIPPED, get_settings())
    params = wf.validate({"prompt": "a fox"}).with_resolved_seed(random.Random(1))
    return wf, wf.render(params, "wan22_i2v_start.png", "comfyfleet/job-1")


def test_trimmed_graph_passes_comfyuis_own_validation(rendered, object_info_wan):
    wf, graph = rendered
    trimmed = drop_leading_frames(graph, wf.video_node, 1)
    check = validate_prompt(trimmed, object_info_wan)
    assert check.status_code == 200, check.node_errors
    assert check.outputs == [wf.video_node]
    node = trimmed[TRIM_NODE_ID]
    assert node["class_type"] == TRIM_NODE_CLASS
    assert node["inputs"] == {
        "image": graph[wf.video_node]["inputs"]["images"],
        "batch_index": 1,
        "length": 4096,
    }
    assert trimmed[wf.video_node]["inputs"]["images"] == [TRIM_NODE_ID, 0]
    assert TRIM_NODE_ID not in graph  # the rendered graph itself is untouched


def test_dropping_nothing_returns_the_graph_unchanged(rendered):
    wf, graph = rendered
    assert drop_leading_frames(graph, wf.video_node, 0) is graph


def test_video_node_without_an_images_input_cannot_be_trimmed(rendered):
    wf, graph = rendered
    graph[wf.video_node]["inputs"].pop("images")
    with pytest.raises(ValidationError) as err:
        drop_leading_frames(graph, wf.video_node, 1)
    assert err.value.field == "workflow" and "images" in err.value.reason


def test_more_frames_than_imagefrombatch_can_skip_is_refused(rendered):
    wf, graph = rendered
    with pytest.raises(ValidationError):
        drop_leading_frames(graph, wf.video_node, 4096)


def test_the_shipped_workflow_can_be_chained():
    assert can_drop_leading_frames(get_workflow(SHIPPED, get_settings()))
