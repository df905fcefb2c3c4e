"""A simulated instance that boots like Vast's ComfyUI image (reference: vast_image.md).

Modelled from the image's public sources, not from what our client assumes:
- `layout`: the image's paths inside an instance sandbox (ComfyUI baked at /opt/workspace-internal, the
  workspace copy at /workspace/ComfyUI, the provisioning marker /.provisioning, ComfyUI's log);
- `venv`: ComfyUI's own Python environment (/venv/main) holding a CUDA "torch" that a custom node's
  requirements would replace, and an offline package index standing in for PyPI;
- `supervisor`: the `comfyui` program: skipped (and restarted, for ever) unless PORTAL_CONFIG names
  ComfyUI, failing (and restarted) while /workspace/ComfyUI/main.py is missing or torch lost CUDA;
- `boot`: `onstart` (entrypoint.sh) runs the boot steps: first-boot network work, then the workspace
  sync (skipped when the target folder exists), the marker removed, then supervisor.
"""

from app.sim.image.boot import SimImage
from app.sim.image.layout import Layout

__all__ = ["Layout", "SimImage"]
