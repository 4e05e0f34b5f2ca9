"""The render stages' work: choose the val images to show (fixed ones and each model's worst), draw their panels
and the cross-model comparison, and the figures of a model's training history and confusion matrix.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.atomic import atomic_dir, write_png
from pipeline.core.errors import PipelineError
from pipeline.evaluation.metrics import per_image_iou
from pipeline.prepared.dataset import PreparedSplit
from pipeline.reporting.draw import compare_grid, panel
from pipeline.reporting.figures import confusion_figure, history_figure


def choose_ids(val_ids: Sequence[str], fixed: Sequence[str], image_scores: dict[str, float], worst_k: int) -> list[str]:
    """The fixed ids (every one must be a val id) followed by the `worst_k` other images with the lowest
    per-image IoU: the same images for every model, plus where each model fails most."""
    known = set(val_ids)
    missing = [image_id for image_id in fixed if image_id not in known]
    if missing:
        raise PipelineError(f"render.ids: {', '.join(missing)} not in the val split; list val ids "
                            f"(e.g. {', '.join(list(val_ids)[:3])})")
    scored = [(score, image_id) for image_id, score in image_scores.items() if image_id not in fixed and score == score]
    worst = [image_id for _, image_id in sorted(scored)[:worst_k]]
    return list(fixed) + worst


# --- the render stages' work ---------------------------------------------------------------------------------

def _prediction(predictions_dir: Path, image_id: str) -> np.ndarray:
    path = Path(predictions_dir) / f"{image_id}.png"
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run the evaluate stage of that model first (dvc repro evaluate@<model>)")
    with Image.open(path) as png:
        return np.array(png)


def _sample(val: PreparedSplit, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image, label = val[val.ids.index(image_id)]
    return image.permute(1, 2, 0).numpy(), label.numpy()


def _read_csv(path: Path, stage: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the {stage} stage of that model first "
                            f"(dvc repro {stage}@<model>)") from None


def model_figures(history_csv: Path, confusion_csv: Path) -> dict[str, Image.Image]:
    """`history.png` (train loss, learning rate and val mIoU per epoch, from the train stage's history) and
    `confusion.png` (from the evaluate stage's confusion rows)."""
    history = [{key: (int(value) if key == "epoch" else float(value) if value else None) for key, value in row.items()}
               for row in _read_csv(history_csv, "train")]
    counts = _read_csv(confusion_csv, "evaluate")
    names = list(dict.fromkeys(row["truth"] for row in counts))
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    position = {name: i for i, name in enumerate(names)}
    for row in counts:
        matrix[position[row["truth"]], position[row["prediction"]]] = int(row["pixels"])
    return {"history.png": history_figure(history), "confusion.png": confusion_figure(matrix, names)}


def render_model(key: str, val: PreparedSplit, predictions_dir: Path, out_dir: Path, fixed_ids: Sequence[str],
                 worst_k: int, figures: dict[str, Image.Image] | None = None) -> list[str]:
    """One panel per chosen val image (`fixed_ids`, then the model's `worst_k` by per-image IoU) and each of
    `figures` (file name → image) into `out_dir`, replaced as a whole; returns the ids drawn, in order."""
    scores = {image_id: per_image_iou(_prediction(predictions_dir, image_id), val[i][1].numpy(),
                                      val.labels.num_classes)
              for i, image_id in enumerate(val.ids)}
    chosen = choose_ids(val.ids, fixed_ids, scores, worst_k)
    with atomic_dir(out_dir) as out:
        for rank, image_id in enumerate(chosen):
            image, truth = _sample(val, image_id)
            kind = "chosen" if image_id in fixed_ids else "worst"
            title = f"{key} · {image_id} · image IoU {scores[image_id]:.3f} ({kind})"
            write_png(out / f"{rank:02d}-{image_id}.png",
                      panel(image, truth, _prediction(predictions_dir, image_id), title=title, labels=val.labels))
        for name, figure in (figures or {}).items():
            write_png(out / name, figure)
    return chosen


def render_comparison(val: PreparedSplit, predictions_dirs: dict[str, Path], out_file: Path,
                      fixed_ids: Sequence[str]) -> list[str]:
    """The `fixed_ids` val images side by side across the models of `predictions_dirs` (model → directory of
    its predictions), written to `out_file`; returns the ids drawn."""
    ids = choose_ids(val.ids, fixed_ids, {}, 0)
    if not ids:
        raise PipelineError("render.ids: empty; list the val ids to compare across models")
    samples = [_sample(val, image_id) for image_id in ids]
    predictions = {key: [_prediction(directory, image_id) for image_id in ids]
                   for key, directory in predictions_dirs.items()}
    scores = {key: [per_image_iou(pred, truth, val.labels.num_classes) for pred, (_, truth) in zip(maps, samples)]
              for key, maps in predictions.items()}
    grid = compare_grid([s[0] for s in samples], [s[1] for s in samples], predictions, ids, scores=scores,
                        labels=val.labels)
    write_png(out_file, grid)
    return ids
