"""comfyfleet: rented Vast.ai GPUs as a reliable Wan 2.2 image-to-video API."""

import warnings

# asyncssh still names DSA key classes in its type hints, so importing it makes `cryptography` warn (ten
# lines per process, on every command). comfyfleet never uses DSA keys; the warning is noise to a user.
warnings.filterwarnings("ignore", message="DSA is deprecated")

__version__ = "0.1.0"
