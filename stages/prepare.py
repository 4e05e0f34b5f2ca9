"""Stage `prepare`: check the pairs of the train set (VOC train, or trainaug with SBD) and of val, or those of the
dataset that params.yaml's `dataset` describes, and pack them into memory-mappable arrays, with statistics.

    python -m stages.prepare [--source data/source] [--sbd data/SBD] [--out data/prepared]
                             [--metrics metrics/data.json]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.core import layout
from pipeline.core.atomic import write_json
from pipeline.core.cli import run_stage
from pipeline.core.params.data import data_sections
from pipeline.core.params.schema import ParamsFile
from pipeline.ingest.layouts import dataset_layout
from pipeline.ingest.prepare import prepare

log = logging.getLogger("stages.prepare")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--source", type=Path, default=None,
                        help="the dataset's tree; default data.path (data/source: the extracted archive)")
    parser.add_argument("--sbd", type=Path, default=layout.SBD_DIR, help="the extracted SBD (read for trainaug)")
    parser.add_argument("--out", type=Path, default=layout.PREPARED)
    parser.add_argument("--metrics", type=Path, default=layout.DATA_METRICS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params_file = ParamsFile.read(args.params)
    params = data_sections(params_file)
    with params_file.naming_errors():
        dataset_layout(params.dataset)  # the layout's own keys, checked before any work
    stats = prepare(args.source or Path(params.data.path), args.out, dataset=params.dataset,
                    workers=params.prepare.workers, train_set=params.train_set, sbd_root=args.sbd,
                    seed=params.prepare.seed)
    write_json(args.metrics, stats)
    for split, split_stats in stats.items():
        log.info("%s (%s): %d images (%s), %.1f %% void, sha256 %s", split, split_stats["set"], split_stats["images"],
                 ", ".join(f"{n} from {source}" for source, n in split_stats["sources"].items()),
                 100 * split_stats["void_fraction"], split_stats["sha256"][:12])


if __name__ == "__main__":
    run_stage(main)
