"""The served model's MLflow directory: `model.pt` (weights, loaded with `weights_only=True`), its checked ONNX
export `model.onnx` (so a registered version carries it), a copy of the `pipeline` package, and `served_model.py`,
which MLflow runs to build the service ("models from code": no pickle).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import tempfile
import warnings
from pathlib import Path

from pipeline.core.params.inference import InferenceParams
from pipeline.core.params.serving import ServingParams
from pipeline.models.saved import saved_architecture

# The served model's signature: one base64 image file per request row in, one base64 palette PNG per row out.
INPUT_COLUMN = "image"
OUTPUT_COLUMN = "mask_png"
PACKAGE = Path(__file__).resolve().parents[1]  # pipeline/
ENTRY_POINT = Path(__file__).resolve().parent / "served_model.py"


def requirements(model_file: str | Path) -> list[str]:
    """What the served model's environment installs: the versions of the libraries that built the network here
    (segmentation_models_pytorch and timm only for its networks), then what the entry point imports."""
    pinned = ["torch", "torchvision", "mlflow"]
    if saved_architecture(model_file) == "smp":
        pinned += ["segmentation-models-pytorch", "timm"]
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in pinned] + [
        "numpy", "pillow", "pandas"]


def save_served_model(model_file: str | Path, directory: str | Path, onnx_file: str | Path | None = None,
                      limits: ServingParams | None = None, inference: InferenceParams | None = None) -> Path:
    """Write the MLflow model directory for `model_file` (a `pipeline.models.saved.save_model` file), with
    `onnx_file` among its artefacts when given and the request `limits` (default: `ServingParams()`) and the
    `inference` settings (whole or slide mode, TTA; default: whole) as its model config, at `directory`."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
                               outputs=Schema([ColSpec("string", OUTPUT_COLUMN)]))
    artifacts = {"model": str(model_file), **({"onnx": str(onnx_file)} if onnx_file else {})}
    with tempfile.TemporaryDirectory() as scratch:
        code = Path(scratch) / PACKAGE.name  # the package without caches
        shutil.copytree(PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__"))
        with warnings.catch_warnings():
            # MLflow suggests type hints and an input example; the signature above already states the schema, and
            # an example would make it run the model at save time.
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                str(directory), python_model=str(ENTRY_POINT), artifacts=artifacts,
                code_paths=[str(code)], signature=signature,
                model_config={**dataclasses.asdict(limits or ServingParams()),
                              "inference": dataclasses.asdict(inference or InferenceParams())},
                # Stated, not inferred: inference would load the model in a subprocess at every save.
                pip_requirements=requirements(model_file))
    return Path(directory)
