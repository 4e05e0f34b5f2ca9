"""DVC stage `evaluate@<model>`: full-resolution val inference → metrics, per-class and confusion tables,
and the VOC-format palette PNG of every prediction; in MLflow, the scores and the served model (with the export's
model.onnx), registered.

    python -m stages.evaluate --model deeplab [--device cuda:0]
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from pipeline.core import layout, runtime
from pipeline.core.atomic import write_json, write_text
from pipeline.core.cli import add_model_path_options, model_paths_from, run_stage
from pipeline.core.errors import PipelineError
from pipeline.core.params.evaluate import EvaluateParams
from pipeline.core.params.inference import InferenceParams
from pipeline.core.params.schema import ParamsFile
from pipeline.core.params.serving import ServingParams
from pipeline.core.params.tracking import tracking_params
from pipeline.core.tables import csv_text
from pipeline.evaluation.evaluate import evaluate_split, log_evaluation
from pipeline.models.saved import load_saved
from pipeline.prepared.dataset import PreparedSplit
from pipeline.serving.package import save_served_model
from pipeline.tracking.registry import CHAMPION, registered_name, version_tags
from pipeline.tracking.runs import provenance_tags, resume_training_run

log = logging.getLogger("stages.evaluate")
PATHS = ("model_file", "onnx_file", "run_file", "predictions", "metrics", "per_class", "confusion", "speed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=layout.PREPARED)
    add_model_path_options(parser, *PATHS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = ParamsFile.read(args.params)
    key = params.model_key(args.model)
    settings, limits = params.section("evaluate", EvaluateParams), params.section("serving", ServingParams)
    inference = params.section("inference", InferenceParams)
    experiment = tracking_params(params).experiment
    paths = model_paths_from(args, key)
    model, labels = load_saved(paths.model_file)
    val = PreparedSplit(args.prepared, "val")
    if labels.classes != val.labels.classes:
        raise PipelineError(f"{paths.model_file}: trained on the classes {', '.join(labels.classes)}, but "
                            f"{args.prepared} holds {', '.join(val.labels.classes)}; retrain it (dvc repro "
                            f"train@{key})")
    policy = runtime.resolve(args.device, network=model)
    result = evaluate_split(policy.place_model(model), val, policy, paths.predictions,
                            inference=inference, batch_size=settings.batch_size)

    write_json(paths.metrics, result.metrics)
    write_json(paths.speed, result.speed)
    write_text(paths.per_class, csv_text(result.per_class, ("class", "iou")))
    write_text(paths.confusion, csv_text(result.confusion, ("truth", "prediction", "pixels")))
    tracker = resume_training_run(paths.run_file, experiment, key)
    log_evaluation(tracker, result)
    # The version registered below serves this model.pt and carries its ONNX export (`dvc repro` always has it).
    onnx_file = paths.onnx_file if paths.onnx_file.is_file() else None
    if onnx_file is None:
        log.warning("%s not found: the served model carries no ONNX export (python -m stages.export --model %s "
                    "writes it)", paths.onnx_file, key)
    tracker.log_model(paths.model_file, functools.partial(save_served_model, onnx_file=onnx_file,
                                                         limits=limits, inference=inference))
    name = registered_name(key, params.dataset_name())
    version = tracker.register_model(name,
                                     version_tags(result.metrics["miou"], provenance_tags(str(args.prepared))))
    tracker.close()
    metrics, speed = result.metrics, result.speed
    absent = f" ({len(metrics['absent_classes'])} absent classes left out)" if metrics["absent_classes"] else ""
    print(f"{key}: val mIoU {metrics['miou']:.4f}{absent}, pixel accuracy {metrics['pixel_accuracy']:.4f}, "
          f"{speed['images_per_second']} img/s on {policy.device}")
    if version is not None:
        print(f"{key}: registered as {name} version {version} "
              f"(`python -m tools.promote --model {key}` makes the best version the {CHAMPION})")


if __name__ == "__main__":
    run_stage(main)
