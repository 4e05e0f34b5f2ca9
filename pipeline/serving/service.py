"""What the served model does with a request: decode base64 image files, segment them, encode the masks.

A request row holds one base64 JPEG or PNG file (column `image`); its answer is `mask_png`, the base64 palette PNG
that `tools.predict` writes for the same file: VOC colours, the input's size, pixel value = class id.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import numpy as np
import torch

from pipeline.core import runtime
from pipeline.core.errors import PipelineError
from pipeline.core.labels import label_png
from pipeline.models.saved import load_model
from pipeline.serving.images import read_rgb, segment
from pipeline.serving.package import INPUT_COLUMN


def decode_image(encoded: str, row: int) -> np.ndarray:
    """H×W×3 uint8 from one request cell, read exactly as `tools.predict` reads a file."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise PipelineError(f"row {row}: `{INPUT_COLUMN}` is not base64 text; send the file's bytes "
                            "base64-encoded") from None
    return read_rgb(io.BytesIO(data), name=f"row {row}")


def encode_mask(labels: np.ndarray) -> str:
    """The palette PNG `tools.predict` writes (no metadata, so equal pixels give equal bytes), base64."""
    buffer = io.BytesIO()
    label_png(labels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def load_service_model(model_file: str | Path) -> tuple[torch.nn.Module, runtime.Runtime]:
    """The network on this machine's device (a GPU when there is one), in eval mode, and the policy to run it."""
    model = load_model(model_file)
    policy = runtime.resolve("auto", network=model)
    return policy.place_model(model).eval(), policy


def segment_encoded(model: torch.nn.Module, policy: runtime.Runtime, images: list[str]) -> list[str]:
    """One `mask_png` per encoded image; every row is decoded before any is segmented, so a bad row fails the
    request before the model spends time on the others."""
    decoded = [decode_image(image, row) for row, image in enumerate(images)]
    return [encode_mask(segment(model, image, policy)) for image in decoded]
