"""Stage `extract`: unpack the segmentation subset of the VOC tar as the VOCdevkit directory <out> (<out>/VOC2012).

    python -m stages.extract [--tar data/raw/VOCtrainval_11-May-2012.tar] [--out data/VOCdevkit]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core import layout
from pipeline.core.cli import run_stage
from pipeline.ingest.archive import extract_segmentation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tar", type=Path, default=layout.VOC_TAR)
    parser.add_argument("--out", type=Path, default=layout.VOC_DEVKIT, help="the VOCdevkit directory to create")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    extract_segmentation(args.tar, args.out)


if __name__ == "__main__":
    run_stage(main)
