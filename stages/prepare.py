"""Stage: check the extracted VOC train/val pairs and pack them into memory-mappable arrays, with statistics.

    python -m stages.prepare [--params params.yaml] [--voc data] [--out data/prepared] [--metrics metrics/data.json]
"""

from __future__ import annotations

import argparse
import logging

from pipeline.atomic import write_json
from pipeline.cli import run_stage
from pipeline.data import prepare
from pipeline.params import load

log = logging.getLogger("stages.prepare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--voc", default="data", help="directory holding VOCdevkit/VOC2012")
    parser.add_argument("--out", default="data/prepared")
    parser.add_argument("--metrics", default="metrics/data.json")
    args = parser.parse_args()
    params = load(args.params)
    stats = prepare(args.voc, args.out, workers=params.prepare.workers)
    write_json(args.metrics, stats)
    for split, split_stats in stats.items():
        log.info("%s: %d images, %.1f %% void, sha256 %s", split, split_stats["images"],
                 100 * split_stats["void_fraction"], split_stats["sha256"][:12])


if __name__ == "__main__":
    run_stage(main)
