"""`make rehearse`: the real train and evaluate stages on a generated VOC-shaped dataset; what a real run costs.

    python -m tools.rehearse [--models fcn unet deeplab] [--epochs 2] [--device auto] [--out rehearsal/results.json]

1,464 train / 1,449 val images of VOC's sizes by default; about 3 GB of disk for the workdir, deleted afterwards
unless --workdir is given. Prints a markdown table and writes every number to --out. Meant for a GPU: on a CPU
the default recipe (DeepLab ResNet-50 at 512×512) takes hours; try `--train 64 --val 32` there.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from devtools import rehearsal
from pipeline.core.atomic import write_json
from pipeline.core.cli import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="the recipe to rehearse")
    parser.add_argument("--models", nargs="+", help="keys of `models` (default: all)")
    parser.add_argument("--epochs", type=int, default=2, help="the first pays the one-off costs, the last "
                        "gives the pace (see devtools/rehearsal.py)")
    parser.add_argument("--train", type=int, default=rehearsal.VOC_TRAIN)
    parser.add_argument("--val", type=int, default=rehearsal.VOC_VAL)
    parser.add_argument("--sizes", type=int, nargs=2, default=rehearsal.VOC_SIZES, metavar=("SHORT_MIN", "LONG"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, help="keep the generated data and outputs here")
    parser.add_argument("--out", type=Path, default=Path("rehearsal/results.json"))
    args = parser.parse_args(argv)
    base = yaml.safe_load(Path(args.params).read_text())
    models = args.models or list(base["models"])
    with tempfile.TemporaryDirectory(prefix="voc-rehearsal-") as scratch:
        results = rehearsal.run(args.workdir or Path(scratch), models=models, base_params=base, epochs=args.epochs,
                                n_train=args.train, n_val=args.val, sizes=tuple(args.sizes), device=args.device,
                                on_progress=lambda so_far: write_json(args.out, so_far))
    print(rehearsal.markdown(results))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    run_stage(main)
