"""Stage `download`: fetch the VOC 2012 trainval tar from the first source in data.urls that delivers it.

    python -m stages.download [--out data/raw/VOCtrainval_11-May-2012.tar]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core import layout
from pipeline.core.cli import run_stage
from pipeline.core.params import load
from pipeline.ingest.download import fetch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=layout.VOC_TAR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load(args.params).data
    fetch(data.urls, args.out, md5=data.md5, size=data.size, timeout_s=data.timeout_s, retries=data.retries)


if __name__ == "__main__":
    run_stage(main)
