"""What fine-tuning and the losses for imbalanced classes do here, measured on generated data by the real training
loop and the evaluate path (`python -m tools.study losses|finetune` prints the tables of docs/results.md):

- losses: a dataset in the folders layout with one rare class (paint, in every `RARE_EVERY`-th image), prepared
  once, and the same small U-Net trained with each loss recipe and seed; the rare class's val IoU and the mIoU.
- finetune: the demo's DeepLab (ResNet-18, output stride 16, the demo's recipe) trained on a generated VOC train
  split, then a 4-class dataset (the plates) trained from scratch and from that model (`init`), with and without
  its backbone frozen; the plates' val mIoU.
"""

from __future__ import annotations

import statistics
import tarfile
from collections.abc import Callable
from pathlib import Path

import yaml

from devtools.synthetic import (
    FOLDERS_CLASSES,
    FOLDERS_COLORS,
    FOLDERS_IGNORE_COLOR,
    write_folders_dataset,
    write_voc_tar,
)
from pipeline.core import runtime
from pipeline.core.params.data import DatasetParams
from pipeline.core.params.schema import ParamsFile
from pipeline.evaluation.evaluate import evaluate
from pipeline.ingest.prepare import prepare
from pipeline.models.saved import save_model
from pipeline.prepared.dataset import PreparedSplit
from pipeline.training import checkpoint
from pipeline.training.loop import TrainingJob, train_model

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def plates(n_classes: int = 4) -> DatasetParams:
    return DatasetParams(name="plates", layout="folders",
                         splits={"train": "splits/train.txt", "val": "splits/val.txt"},
                         classes=list(FOLDERS_CLASSES[:n_classes]),
                         colors=[list(c) for c in FOLDERS_COLORS[:n_classes]], ignore_color=list(FOLDERS_IGNORE_COLOR))


def train_and_score(model: dict, train: dict, prepared: Path, workdir: Path, dataset: str = "plates"):
    """Train `model` (a models entry) with `train` (the train section) on `prepared`; (the trained result, its val
    scores)."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = {**base, "train": train, "models": {"net": model}, "tracking": {"experiment": "study"},
           "dataset": {**base["dataset"], "name": dataset}}
    trained = train_model(TrainingJob.from_params(ParamsFile(raw), "net"), prepared=prepared,
                          checkpoint_dir=workdir / "checkpoints", progress=False)
    checkpoint.clear(trained.checkpoint_dir)  # finished: as the train stage does
    val = PreparedSplit(prepared, "val")
    return trained, evaluate(trained.model, val, runtime.resolve("cpu")).confusion.compute(val.labels.classes)


def table(header: str, rows: dict[str, list[float]], columns: tuple[str, ...] = ("val mIoU",)) -> str:
    """A markdown table: per row name, each column's value per seed and their mean."""
    lines = [header, "", "| | " + " | ".join(f"{c}, seeds {' / '.join(map(str, SEEDS))} | mean" for c in columns)
             + " |", "|---|" + "---|---:|" * len(columns)]
    for name, values in rows.items():
        cells = []
        for i in range(len(columns)):
            series = [v[i] for v in values]
            cells += [" / ".join(f"{v:.3f}" for v in series), f"{statistics.mean(series):.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- losses for imbalanced classes ---------------------------------------------------------------------------------

RARE_EVERY = 6
LOSS_RECIPES = {
    "cross-entropy": [{"name": "cross_entropy", "weight": 1.0}],
    "cross-entropy, class_weights: auto": [{"name": "cross_entropy", "weight": 1.0, "class_weights": "auto"}],
    "cross-entropy + Dice": [{"name": "cross_entropy", "weight": 1.0}, {"name": "dice", "weight": 1.0}],
}
LOSS_TRAIN = {"epochs": 12, "batch_size": 8, "optimizer": "adam", "lr": 0.005, "weight_decay": 0.0,
              "lr_schedule": "cosine", "crop_size": [64, 64], "scale_range": [0.75, 1.25], "workers": 0,
              "device": "cpu", "amp": False, "bn_momentum": 0.1, "val_every": 12}


def losses(workdir: Path, n_images: int = 144) -> str:
    write_folders_dataset(workdir / "rare", n_images=n_images, rare_every=RARE_EVERY)
    stats = prepare(workdir / "rare", workdir / "prepared", dataset=plates(), train_set="train", workers=1,
                    progress=False)
    rows: dict[str, list] = {}
    for name, loss in LOSS_RECIPES.items():
        for seed in SEEDS:
            _, scores = train_and_score({"architecture": "unet", "options": {"width": 8}},
                                        {**LOSS_TRAIN, "loss": loss, "seed": seed}, workdir / "prepared", workdir)
            rows.setdefault(name, []).append((scores["iou"]["paint"], scores["miou"]))
    pixels = stats["train"]["class_pixels"]
    header = (f"Rare class: paint, {pixels['paint'] / sum(pixels.values()):.1%} of the labelled training pixels "
              f"(in every {RARE_EVERY}th image); U-Net width 8, {LOSS_TRAIN['epochs']} epochs.")
    return table(header, rows, ("paint IoU", "mIoU"))


# --- fine-tuning from a trained model ------------------------------------------------------------------------------

DEMO_DEEPLAB = {"architecture": "deeplab",
                "options": {"backbone": "resnet18", "output_stride": 16, "pretrained": "none", "aux_loss": False}}


def demo_train(**changes) -> dict:
    """params.demo.yaml's recipe for its DeepLab, with `changes`."""
    demo = yaml.safe_load((REPO / "params.demo.yaml").read_text())["train"]
    base = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    return {**base, **demo, "device": "cpu", **changes}


FINETUNE_RECIPES: dict[str, Callable[[Path], dict]] = {
    "from scratch": lambda source: DEMO_DEEPLAB,
    "init from the VOC model": lambda source: {**DEMO_DEEPLAB, "init": {"from": str(source)}},
    "init, backbone frozen throughout": lambda source: {**DEMO_DEEPLAB, "init": {"from": str(source)},
                                                        "train": {"freeze_backbone_epochs": 10}},
}


def finetune(workdir: Path) -> str:
    write_voc_tar(workdir / "voc.tar", seed=0, n_train=368, n_val=100, min_size=96, max_size=160)
    with tarfile.open(workdir / "voc.tar") as tar:
        tar.extractall(workdir / "voc", filter="data")
    prepare(workdir / "voc", workdir / "voc-prepared", train_set="train", workers=1, progress=False)
    voc, voc_scores = train_and_score(DEMO_DEEPLAB, demo_train(), workdir / "voc-prepared", workdir, dataset="voc")
    source = workdir / "voc-deeplab.pt"
    from pipeline.models.registry import typed_options

    save_model(source, voc.model, architecture="deeplab", options=typed_options("deeplab", DEMO_DEEPLAB["options"]),
               labels=PreparedSplit(workdir / "voc-prepared", "train").labels)
    write_folders_dataset(workdir / "plates", n_images=48)
    prepare(workdir / "plates", workdir / "plates-prepared", dataset=plates(), train_set="train", workers=1,
            progress=False)
    rows: dict[str, list] = {}
    for name, model in FINETUNE_RECIPES.items():
        for seed in SEEDS:
            _, scores = train_and_score(model(source), demo_train(seed=seed, epochs=10, batch_size=8, val_every=10),
                                        workdir / "plates-prepared", workdir)
            rows.setdefault(name, []).append((scores["miou"],))
    header = (f"The VOC model: the demo's DeepLab recipe on the generated VOC train split (368 images), val mIoU "
              f"{voc_scores['miou']:.3f}; then the plates (32 train, 16 val images, 4 classes), 10 epochs of "
              "batch 8, otherwise the same recipe.")
    return table(header, rows)


STUDIES = {"losses": losses, "finetune": finetune}
