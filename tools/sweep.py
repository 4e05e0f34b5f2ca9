"""`make sweep`: a grid of params as queued DVC experiments on the demo's data (after `make demo`), one MLflow run each.

    python -m tools.sweep                                          # models.fcn.train.lr in [0.001, 0.002, 0.004]
    python -m tools.sweep --set 'models.unet.train.lr=[0.002, 0.005]' --set 'models.unet.options.width=[8, 16]'
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from devtools import sweep
from pipeline.core.cli import run_stage
from pipeline.core.errors import PipelineError


def grid_entry(text: str) -> tuple[str, list]:
    """`key=[v1, v2]` (a YAML list) → (key, [v1, v2])."""
    key, sep, values = text.partition("=")
    try:
        parsed = yaml.safe_load(values) if sep else None
    except yaml.YAMLError as error:
        raise PipelineError(f"--set {text}: not a YAML list ({error.problem})") from None
    if not key or not isinstance(parsed, list) or not parsed:
        raise PipelineError(f"--set {text}: expected KEY=[VALUE, ...], e.g. 'models.fcn.train.lr=[0.001, 0.002]'")
    return key.strip(), parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="grid", action="append", metavar="KEY=[V1, V2, ...]",
                        help="a swept param and its values; several --set give their product "
                             f"(default: {sweep.DEFAULT_GRID})")
    parser.add_argument("--tar", type=Path, default=Path("data/synthetic/VOCtrainval-synthetic.tar"),
                        help="the demo's generated VOC archive")
    parser.add_argument("--sbd-tgz", type=Path, default=Path("data/synthetic/benchmark-synthetic.tgz"),
                        help="the demo's generated SBD archive")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (each one uses every core)")
    args = parser.parse_args()
    grid = dict(grid_entry(text) for text in args.grid) if args.grid else sweep.DEFAULT_GRID
    sweep.run(grid=grid, tar=args.tar, sbd_tgz=args.sbd_tgz, jobs=args.jobs)


if __name__ == "__main__":
    run_stage(main)
