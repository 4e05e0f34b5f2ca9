"""`make demo`: generate small VOC- and SBD-format archives and run the whole DVC pipeline on them, offline.

    python -m tools.demo [--train 368 --val 100 --sbd-train 24 --sbd-val 8 --min-size 96 --max-size 160]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devtools import demo
from pipeline.core.cli import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tar", default="data/synthetic/VOCtrainval-synthetic.tar")
    parser.add_argument("--sbd-tgz", default="data/synthetic/benchmark-synthetic.tgz")
    parser.add_argument("--train", type=int, default=368, help="number of generated VOC train images")
    parser.add_argument("--val", type=int, default=100, help="number of generated VOC val images")
    parser.add_argument("--sbd-train", type=int, default=24, help="SBD train images not in VOC (trainaug adds them)")
    parser.add_argument("--sbd-val", type=int, default=8, help="SBD val images not in VOC (trainaug adds them)")
    parser.add_argument("--sbd-overlap", type=int, default=8,
                        help="VOC train ids in each SBD list, and VOC val ids in SBD train (trainaug drops those)")
    parser.add_argument("--min-size", type=int, default=96)
    parser.add_argument("--max-size", type=int, default=160)
    parser.add_argument("--min-miou", type=float, default=demo.MIN_MIOU, help="fail when a model scores lower")
    args = parser.parse_args()
    demo.run(tar=Path(args.tar), images=(args.train, args.val), sizes=(args.min_size, args.max_size),
             sbd_tgz=Path(args.sbd_tgz), sbd_images=(args.sbd_train, args.sbd_val), sbd_overlap=args.sbd_overlap,
             min_miou=args.min_miou)


if __name__ == "__main__":
    run_stage(main)
