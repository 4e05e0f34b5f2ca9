"""Segment your own images with a trained model.

    python -m tools.predict --model deeplab photos/*.jpg --out out/
    python -m tools.predict -m Deeplab 'photos/**/*.png' --out out/
    python -m tools.predict --model-uri runs:/<run id>/model img.jpg --out out/
    python -m tools.predict --model deeplab --runtime onnxruntime photos/*.jpg --out out/   # models/deeplab/model.onnx

Writes <name>.png (palette PNG, VOC colours, pixel value = class id) and <name>_overlay.png per image.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.core import runtime
from pipeline.core.cli import model_paths_from, run_stage
from pipeline.core.errors import PipelineError
from pipeline.core.params.inference import InferenceParams
from pipeline.core.params.serving import ServingParams
from pipeline.core.params.whole import load
from pipeline.export.onnx_model import OnnxModel
from pipeline.models.saved import load_saved, saved_labels
from pipeline.serving.predict_files import expand, segment_files
from pipeline.tracking.runs import download_logged_model

ONNX_FILE = "model.onnx"  # beside model.pt, in models/<key>/ and in a logged served model's artifacts/


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model", help="trained model name: loads models/<name>/model.pt (the DVC output)")
    parser.add_argument("--model-file", type=Path, help="with --model: another model file than models/<name>/model.pt")
    parser.add_argument("--onnx-file", type=Path, help="with --model and --runtime onnxruntime: another ONNX file "
                        "than models/<name>/model.onnx")
    source.add_argument("--model-uri", help="an MLflow model URI such as runs:/<run id>/model")
    parser.add_argument("images", nargs="+", help="image files or glob patterns")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="run the PyTorch model, or its checked ONNX export in ONNX Runtime (the export stage's "
                        "model.onnx; CUDA when this onnxruntime has it and the device is a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    device = runtime.resolve_device(args.device)  # a device that is not there fails before any download
    paths = expand(args.images)
    # --model-uri needs no checkout: without a params file, the default limits.
    params = load(args.params) if args.model or Path(args.params).is_file() else None
    max_pixels = (params.serving if params else ServingParams()).max_pixels
    inference = params.inference if params else InferenceParams()
    with tempfile.TemporaryDirectory() as downloaded:
        if args.model_uri:
            model_file = download_logged_model(args.model_uri, downloaded)
            onnx_file = model_file.with_name(ONNX_FILE)
        else:
            files = model_paths_from(args, params.model_key(args.model))
            model_file, onnx_file = files.model_file, files.onnx_file
        if args.runtime == "torch":
            model, labels = load_saved(model_file)
        else:
            if not onnx_file.is_file() and args.model_uri:
                raise PipelineError(f"{args.model_uri}: holds no {ONNX_FILE} (logged before the export stage "
                                    "existed); use --runtime torch, or the URI of a model evaluated since")
            if not onnx_file.is_file():
                raise PipelineError(f"{onnx_file}: not found; `dvc repro export@{args.model}` writes it, or use "
                                    "--runtime torch")
            # The model file's label set names and colours ONNX Runtime's masks too.
            model, labels = OnnxModel(onnx_file, device), saved_labels(model_file)
    policy = runtime.resolve(device, network=model)
    failures = segment_files(policy.place_model(model).eval(), paths, Path(args.out), policy,
                             max_pixels=max_pixels, labels=labels, inference=inference)
    print(f"{len(paths) - len(failures)} of {len(paths)} images segmented into {args.out}")
    if failures:
        raise PipelineError(f"{len(failures)} file(s) could not be read: {'; '.join(failures)}")
    return 0


if __name__ == "__main__":
    run_stage(main)
