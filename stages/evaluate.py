"""DVC stage `evaluate@<model>`: full-resolution val inference → metrics, per-class and confusion tables,
and the VOC-format palette PNG of every prediction.

    python -m stages.evaluate --model deeplab [--device cuda:0]
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import torch

from pipeline import checkpoint, params
from pipeline.atomic import atomic_dir, write_json, write_text
from pipeline.cli import run_stage
from pipeline.data import VOCPrepared
from pipeline.distributed import resolve_device
from pipeline.evaluate import confusion_rows, evaluate, per_class_rows, report
from pipeline.render import confusion_figure, label_to_png
from pipeline.tables import csv_text
from pipeline.tracking import resume_training_run
from pipeline.voc import CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", default="data/prepared")
    args = parser.parse_args()
    config = params.load(args.params)
    key = config.model_key(args.model)
    device = resolve_device(args.device)
    model = checkpoint.load_model(Path("models") / key / "model.pt", device)
    val = VOCPrepared(args.prepared, "val")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with atomic_dir(Path("predictions") / key) as out:
        def save(index, prediction, _label):
            label_to_png(prediction.to(torch.uint8).cpu().numpy()).save(out / f"{val.ids[index]}.png")

        run = evaluate(model, val, device, flip=config.evaluate.flip, scales=config.evaluate.scales,
                       amp=device.type == "cuda", channels_last=device.type == "cuda", on_prediction=save)
    scores = run.confusion.compute()
    peak_mb = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20

    metrics = report(scores)
    write_json(Path("metrics") / f"{key}.json", metrics)
    # Speed varies from run to run, so it lives apart from the metrics that CI compares byte for byte.
    speed = {"images_per_second": round(run.images_per_second, 2), "peak_memory_mb": round(peak_mb, 1),
             "device": str(device), "images": run.images}
    write_json(Path("metrics") / key / "speed.json", speed)
    write_text(Path("metrics") / key / "per_class.csv", csv_text(per_class_rows(scores), ("class", "iou")))
    write_text(Path("metrics") / key / "confusion.csv",
               csv_text(confusion_rows(run.confusion.matrix, CLASSES), ("truth", "prediction", "pixels")))

    tracker = resume_training_run(Path("models") / key / "mlflow_run.json", config.tracking.experiment, key)
    tracker.log_metrics({f"val_{name}": metrics[name] for name in ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou")})
    tracker.log_metrics({f"val_{name}": value for name, value in speed.items() if isinstance(value, float)})
    tracker.log_table({"class": list(metrics["iou"]), "iou": list(metrics["iou"].values())}, "val_per_class_iou.json")
    tracker.log_image(confusion_figure(run.confusion.matrix.cpu().numpy(), CLASSES), "val_confusion.png")
    tracker.close()
    absent = f" ({len(scores['absent_classes'])} absent classes left out)" if scores["absent_classes"] else ""
    print(f"{key}: val mIoU {metrics['miou']:.4f}{absent}, pixel accuracy {metrics['pixel_accuracy']:.4f}, "
          f"{speed['images_per_second']} img/s on {device}")


if __name__ == "__main__":
    run_stage(main)
