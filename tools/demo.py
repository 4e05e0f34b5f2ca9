"""`make demo`: generate a small VOC-format archive and run the whole DVC pipeline on it, offline.

    python -m tools.demo [--train 400 --val 100 --min-size 96 --max-size 160]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.devtools import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tar", default="data/synthetic/VOCtrainval-synthetic.tar")
    parser.add_argument("--train", type=int, default=400, help="number of generated train images")
    parser.add_argument("--val", type=int, default=100, help="number of generated val images")
    parser.add_argument("--min-size", type=int, default=96)
    parser.add_argument("--max-size", type=int, default=160)
    parser.add_argument("--min-miou", type=float, default=demo.MIN_MIOU, help="fail when a model scores lower")
    args = parser.parse_args()
    demo.run(tar=Path(args.tar), images=(args.train, args.val), sizes=(args.min_size, args.max_size),
             min_miou=args.min_miou)


if __name__ == "__main__":
    run_stage(main)
