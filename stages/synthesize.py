"""Stage: write a generated VOC-layout tar (and `<out>.md5` beside it) for the demo and CI.

    python -m stages.synthesize --out data/synthetic/VOCtrainval-synthetic.tar [--seed 0 --train 200 --val 100]
"""

from __future__ import annotations

import argparse
import os

from pipeline.atomic import write_text
from pipeline.cli import run_stage
from pipeline.synthetic import write_voc_tar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/synthetic/VOCtrainval-synthetic.tar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=200, help="number of train images")
    parser.add_argument("--val", type=int, default=100, help="number of val images")
    parser.add_argument("--min-size", type=int, default=96, help="smallest image side in pixels")
    parser.add_argument("--max-size", type=int, default=160, help="largest image side in pixels")
    args = parser.parse_args()
    md5 = write_voc_tar(args.out, seed=args.seed, n_train=args.train, n_val=args.val,
                        min_size=args.min_size, max_size=args.max_size)
    # The download stage checks an md5 and size from params; the sidecar lets the Makefile pass this one.
    write_text(f"{args.out}.md5", f"{md5}\n")
    print(f"{args.out}: md5 {md5}, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    run_stage(main)
