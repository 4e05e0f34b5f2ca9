"""Where the pipeline's files live, relative to the repository root: the one place these paths are spelled.

Each stage takes every path it reads or writes as an argument whose default comes from here, and dvc.yaml
passes the same paths explicitly; tests/test_dvc_contract.py fails when the two disagree, or when a stage's
declared outputs and inputs are not exactly the paths it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

DATA = Path("data")
# The archive data.urls name (VOC's tar by default), whatever its format: extract reads tar, tar.gz or zip by content.
SOURCE_ARCHIVE = DATA / "raw" / "source.archive"
# The dataset's tree as prepare reads it (data.path's default): extract unpacks the archive here, VOC's as
# data/source/VOC2012, a folders dataset as data/source/{images,masks,...}.
SOURCE = DATA / "source"
SBD_TGZ = Path("data/raw/benchmark.tgz")  # SBD's archive: a download cache, not a DVC output (see stages/sbd.py)
SBD_DIR = DATA / "SBD"
PREPARED = DATA / "prepared"
DATA_METRICS = Path("metrics/data.json")
PREDICTIONS = Path("predictions")
COMPARISON = Path("renders/compare.png")
CHECKPOINTS = Path("checkpoints")


@dataclass(frozen=True)
class ModelPaths:
    """The files of one trained model (`models.<key>` in params.yaml); field names are the stages' options
    (`model_file` is `--model-file`)."""

    model_file: Path  # the trained network: architecture, options, state dict (train → evaluate, predict)
    run_file: Path  # the MLflow run id, so evaluate and render log into the training run
    checkpoints: Path  # resumable state of an unfinished run: persistent, never cached by DVC
    history: Path  # per-epoch loss, lr, val mIoU, img/s (DVC plots)
    summary: Path  # the training summary (DVC metrics)
    predictions: Path  # one VOC palette PNG per val image
    metrics: Path  # the val scores CI compares (DVC metrics)
    per_class: Path  # per-class IoU rows (DVC plots)
    confusion: Path  # confusion-matrix rows (DVC plots)
    speed: Path  # evaluation throughput and memory: varies run to run, so apart from `metrics`
    renders: Path  # panels of chosen and worst val images
    onnx_file: Path  # the network as ONNX, checked against model_file (export → evaluate, predict)
    export_report: Path  # that check: agreement and largest logit difference per size (DVC metrics)


def model_paths(key: str, **overrides: Path | None) -> ModelPaths:
    """The paths of model `key`, with any non-None `overrides` (a stage's command-line options) in their place."""
    defaults = ModelPaths(
        model_file=Path("models") / key / "model.pt",
        run_file=Path("models") / key / "mlflow_run.json",
        checkpoints=CHECKPOINTS / key,
        history=Path("metrics/train") / f"{key}.csv",
        summary=Path("metrics/train") / f"{key}.json",
        predictions=PREDICTIONS / key,
        metrics=Path("metrics") / f"{key}.json",
        per_class=Path("metrics") / key / "per_class.csv",
        confusion=Path("metrics") / key / "confusion.csv",
        speed=Path("metrics") / key / "speed.json",
        renders=Path("renders") / key,
        onnx_file=Path("models") / key / "model.onnx",
        export_report=Path("metrics") / key / "export.json",
    )
    given = {name: Path(value) for name, value in overrides.items() if value is not None}
    return dataclasses.replace(defaults, **given)
