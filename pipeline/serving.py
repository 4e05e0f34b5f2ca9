"""The served form of a trained model: MLflow's `python_function` flavour over encoded image files.

A request row holds one base64 JPEG or PNG file (column `image`); its answer is `mask_png`, the base64 palette PNG
that `tools.predict` writes for the same file: VOC colours, the input's size, pixel value = class id. The model
directory (`save_served_model`) holds `model.pt` (weights, loaded with `weights_only=True`), a copy of this
package, and `served_model.py`, which MLflow runs to build the service ("models from code": no pickle).
"""

from __future__ import annotations

import base64
import binascii
import io
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline import checkpoint, runtime
from pipeline.errors import PipelineError
from pipeline.user_images import read_rgb, segment
from pipeline.voc import label_png

INPUT_COLUMN = "image"
OUTPUT_COLUMN = "mask_png"
PACKAGE = Path(__file__).resolve().parent
ENTRY_POINT = PACKAGE / "served_model.py"


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
    model = checkpoint.load_model(model_file)
    policy = runtime.resolve("auto", network=model)
    return policy.place_model(model).eval(), policy


def segment_encoded(model: torch.nn.Module, policy: runtime.Runtime, images: list[str]) -> list[str]:
    """One `mask_png` per encoded image; every row is decoded before any is segmented, so a bad row fails the
    request before the model spends time on the others."""
    decoded = [decode_image(image, row) for row, image in enumerate(images)]
    return [encode_mask(segment(model, image, policy)) for image in decoded]


def save_served_model(model_file: str | Path, directory: str | Path) -> Path:
    """Write the MLflow model directory for `model_file` (a `checkpoint.save_model` file) at `directory`."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
                               outputs=Schema([ColSpec("string", OUTPUT_COLUMN)]))
    with tempfile.TemporaryDirectory() as scratch:
        code = Path(scratch) / PACKAGE.name  # the package without caches or developer tools
        shutil.copytree(PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__", "devtools"))
        with warnings.catch_warnings():
            # MLflow suggests type hints and an input example; the signature above already states the schema, and
            # an example would make it run the model at save time.
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                str(directory), python_model=str(ENTRY_POINT), artifacts={"model": str(model_file)},
                code_paths=[str(code)], signature=signature,
                # Stated, not inferred: inference would load the model in a subprocess at every save.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                                  "numpy", "pillow", "pandas"])
    return Path(directory)
