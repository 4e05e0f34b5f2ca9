"""DVC stage `train@<model>`: train one model from params.yaml and write its DVC outputs.

    python -m stages.train --model fcn [--device cuda:0]
    python -m stages.train -m FCN -g 0          # the original tutorial's form, same meaning
    torchrun --nproc-per-node 8 -m stages.train --model deeplab
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core import layout
from pipeline.core.atomic import write_json, write_text
from pipeline.core.cli import add_model_path_options, model_paths_from, run_stage
from pipeline.core.params.schema import ParamsFile
from pipeline.core.tables import csv_text
from pipeline.tracking.runs import tracking_uri
from pipeline.training import checkpoint, distributed
from pipeline.training.loop import TrainingJob, train_model

HISTORY_COLUMNS = ("epoch", "loss", "lr", "val_miou", "images_per_second")
PATHS = ("model_file", "run_file", "checkpoints", "history", "summary")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="a key of `models` in params.yaml (case-insensitive)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: train.device from params.yaml)")
    where.add_argument("-g", "--gpu", type=int, help="GPU index, as in the original tutorial; -1 means the CPU")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=layout.PREPARED)
    parser.add_argument("--no-progress", action="store_true")
    add_model_path_options(parser, *PATHS)
    args = parser.parse_args(argv)
    if args.gpu is not None:
        args.device = "cpu" if args.gpu < 0 else f"cuda:{args.gpu}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    job = TrainingJob.from_params(ParamsFile.read(args.params), args.model)
    key = job.key
    paths = model_paths_from(args, key)
    try:
        result = train_model(job, prepared=args.prepared, checkpoint_dir=paths.checkpoints,
                             model_file=paths.model_file, device=args.device, progress=not args.no_progress)
        if not result.is_main:
            return  # under torchrun only rank 0 writes
        write_json(paths.run_file, {"run_id": result.run_id, "experiment": result.experiment,
                                    "tracking_uri": tracking_uri()})
        write_text(paths.history, csv_text(result.history, HISTORY_COLUMNS))
        write_json(paths.summary, result.summary)
        # The run is complete and its outputs are written: its checkpoints are only for resuming an unfinished run,
        # and keeping them would turn `dvc repro --force` into "resume the finished run" instead of "train again".
        # Other params' checkpoints stay (pipeline/training/checkpoint.py).
        checkpoint.clear(result.checkpoint_dir)
        print(f"{key}: val mIoU {result.summary['final_val_miou']:.4f} after {result.summary['epochs']} epochs")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run_stage(main)
