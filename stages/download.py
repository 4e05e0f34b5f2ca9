"""Stage `download`: fetch the VOC 2012 trainval tar from the first source in data.urls that delivers it."""

from __future__ import annotations

import argparse

from pipeline import params
from pipeline.cli import run_stage
from pipeline.download import fetch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/raw/VOCtrainval_11-May-2012.tar")
    args = parser.parse_args(argv)
    data = params.load(args.params).data
    fetch(data.urls, args.out, md5=data.md5, size=data.size, timeout_s=data.timeout_s, retries=data.retries)


if __name__ == "__main__":
    run_stage(main)
