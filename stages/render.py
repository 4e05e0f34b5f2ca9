"""DVC stages `render@<model>` (panels of chosen and worst val images) and `compare` (every model side by side).

    python -m stages.render --model fcn
    python -m stages.render --compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import params
from pipeline.atomic import atomic_dir
from pipeline.cli import run_stage
from pipeline.data import VOCPrepared
from pipeline.errors import PipelineError
from pipeline.metrics import per_image_iou
from pipeline.render import choose_ids, compare_grid, panel, save_png
from pipeline.tracking import resume_training_run


def _prediction(key: str, image_id: str) -> np.ndarray:
    path = Path("predictions") / key / f"{image_id}.png"
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run `dvc repro evaluate@{key}` first")
    return np.array(Image.open(path))


def _sample(val: VOCPrepared, position: dict[str, int], image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image, label = val[position[image_id]]
    return image.permute(1, 2, 0).numpy(), label.numpy()


def render_model(config: params.Params, key: str, val: VOCPrepared) -> None:
    position = {image_id: i for i, image_id in enumerate(val.ids)}
    scores = {image_id: per_image_iou(_prediction(key, image_id), val[i][1].numpy()) for image_id, i in position.items()}
    chosen = choose_ids(val.ids, config.render.ids, scores, config.render.worst_k)
    with atomic_dir(Path("renders") / key) as out:
        for rank, image_id in enumerate(chosen):
            image, truth = _sample(val, position, image_id)
            kind = "chosen" if image_id in config.render.ids else "worst"
            title = f"{key} · {image_id} · image IoU {scores[image_id]:.3f} ({kind})"
            save_png(out / f"{rank:02d}-{image_id}.png", panel(image, truth, _prediction(key, image_id), title=title))
    tracker = resume_training_run(Path("models") / key / "mlflow_run.json", config.tracking.experiment, key)
    tracker.log_artifacts(Path("renders") / key, "renders")
    tracker.close()
    print(f"{key}: {len(chosen)} panels in renders/{key}/")


def render_comparison(config: params.Params, val: VOCPrepared) -> None:
    position = {image_id: i for i, image_id in enumerate(val.ids)}
    ids = choose_ids(val.ids, config.render.ids, {}, 0)
    if not ids:
        raise PipelineError("render.ids: empty; list the val ids to compare across models")
    samples = [_sample(val, position, image_id) for image_id in ids]
    predictions = {key: [_prediction(key, image_id) for image_id in ids] for key in config.models}
    scores = {key: [per_image_iou(pred, truth) for pred, (_, truth) in zip(maps, samples)]
              for key, maps in predictions.items()}
    grid = compare_grid([s[0] for s in samples], [s[1] for s in samples], predictions, ids, scores=scores)
    save_png(Path("renders") / "compare.png", grid)
    print(f"renders/compare.png: {len(ids)} images × {len(predictions)} models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-m", "--model")
    target.add_argument("--compare", action="store_true")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", default="data/prepared")
    args = parser.parse_args()
    config = params.load(args.params)
    val = VOCPrepared(args.prepared, "val")
    if args.compare:
        render_comparison(config, val)
    else:
        render_model(config, config.model_key(args.model), val)


if __name__ == "__main__":
    run_stage(main)
