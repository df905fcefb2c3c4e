"""comfyfleet: rented Vast.ai GPUs as a reliable Wan 2.2 image-to-video API."""

__version__ = "0.1.0"
