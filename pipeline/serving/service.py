"""What the served model does with a request: decode base64 image files, segment them, encode the masks.

A request row holds one base64 JPEG or PNG file (column `image`); its answer is `mask_png`, the base64 palette PNG
that `tools.predict` writes for the same file: VOC colours, the input's size, pixel value = class id. Limits, from
`serving` in params.yaml, carried in the served model: at most `max_rows` rows per request, refused before any is
decoded; above `max_pixels`, a JPEG is predicted on a downscaled copy and any other file refused from its header.
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
from pipeline.core.labels import LabelSet, label_png
from pipeline.core.params.inference import InferenceParams
from pipeline.evaluation.predict import WHOLE
from pipeline.models.saved import load_saved
from pipeline.serving.images import at_size, read_photo, segment
from pipeline.serving.package import INPUT_COLUMN


def decode_image(encoded: str, row: int, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """One request cell's pixels and full size, read exactly as `tools.predict` reads a file."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise PipelineError(f"row {row}: `{INPUT_COLUMN}` is not base64 text; send the file's bytes "
                            "base64-encoded") from None
    return read_photo(io.BytesIO(data), name=f"row {row}", max_pixels=max_pixels)


def encode_mask(mask: np.ndarray, labels: LabelSet) -> str:
    """The palette PNG `tools.predict` writes (no metadata, so equal pixels give equal bytes), base64."""
    buffer = io.BytesIO()
    label_png(mask, labels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def load_service_model(model_file: str | Path) -> tuple[torch.nn.Module, runtime.Runtime, LabelSet]:
    """The network on this machine's device (a GPU when there is one), in eval mode, the policy to run it and its
    label set."""
    model, labels = load_saved(model_file)
    policy = runtime.resolve("auto", network=model)
    return policy.place_model(model).eval(), policy, labels


def check_rows(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise PipelineError(f"{rows} rows in one request, above serving.max_rows ({max_rows}); send at most "
                            f"{max_rows} images per request")


def segment_encoded(model: torch.nn.Module, policy: runtime.Runtime, images: list[str], *,
                    max_pixels: int | None = None, max_rows: int | None = None,
                    labels: LabelSet, inference: InferenceParams = WHOLE) -> list[str]:
    """One `mask_png` per encoded image, at the image's size; too many rows fail before any is decoded, and every
    row is decoded before any is segmented, so a bad row fails the request before the model spends time on the
    others."""
    if max_rows is not None:
        check_rows(len(images), max_rows)
    decoded = [decode_image(image, row, max_pixels) for row, image in enumerate(images)]
    return [encode_mask(at_size(segment(model, pixels, policy, inference), size), labels)
            for pixels, size in decoded]
