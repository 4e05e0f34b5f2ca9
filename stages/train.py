"""DVC stage `train@<model>`: train one model from params.yaml and write its DVC outputs.

    python -m stages.train --model fcn [--device cuda:0]
    python -m stages.train -m FCN -g 0          # the original tutorial's form, same meaning
    torchrun --nproc-per-node 8 -m stages.train --model deeplab
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import checkpoint, distributed, params
from pipeline.atomic import write_json, write_text
from pipeline.cli import run_stage
from pipeline.tables import csv_text
from pipeline.train import train_model
from pipeline.tracking import tracking_uri
from pipeline.voc import NUM_CLASSES

HISTORY_COLUMNS = ("epoch", "loss", "lr", "val_miou", "images_per_second")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="a key of `models` in params.yaml (case-insensitive)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: train.device from params.yaml)")
    where.add_argument("-g", "--gpu", type=int, help="GPU index, as in the original tutorial; -1 means the CPU")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.gpu is not None:
        args.device = "cpu" if args.gpu < 0 else f"cuda:{args.gpu}"
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    config = params.load(args.params)
    key = config.model_key(args.model)
    spec = config.model(key)
    try:
        result = train_model(key, config, prepared=Path(args.prepared), device=args.device,
                             progress=not args.no_progress)
        if not result.is_main:
            return  # under torchrun only rank 0 writes
        checkpoint.save_model(Path("models") / key / "model.pt", result.model, architecture=spec.architecture,
                              options=spec.options, num_classes=NUM_CLASSES)
        write_json(Path("models") / key / "mlflow_run.json",
                   {"run_id": result.run_id, "experiment": result.experiment, "tracking_uri": tracking_uri()})
        write_text(Path("metrics/train") / f"{key}.csv", csv_text(result.history, HISTORY_COLUMNS))
        write_json(Path("metrics/train") / f"{key}.json", result.summary)
        print(f"{key}: val mIoU {result.summary['final_val_miou']:.4f} after {result.summary['epochs']} epochs")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run_stage(main)
