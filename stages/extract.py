"""Stage `extract`: unpack the segmentation subset of the VOC tar into <out>/VOCdevkit/VOC2012."""

from __future__ import annotations

import argparse

from pipeline.archive import extract_segmentation
from pipeline.cli import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tar", default="data/raw/VOCtrainval_11-May-2012.tar")
    parser.add_argument("--out", default="data")
    args = parser.parse_args(argv)
    extract_segmentation(args.tar, args.out)


if __name__ == "__main__":
    run_stage(main)
