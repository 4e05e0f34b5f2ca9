"""Stage `sbd`: SBD's benchmark.tgz → data/SBD/{img,cls,train.txt,val.txt}, when prepare.train_set is trainaug.

    python -m stages.sbd [--tgz data/raw/benchmark.tgz] [--out data/SBD]

Download and extraction are one stage because DVC's graph is fixed: with prepare.train_set: train this stage
downloads nothing and writes an empty data/SBD (prepare does not read it), so a VOC-only run never fetches 1.4 GB.
The tgz itself is a download cache, like the torch hub's ImageNet weights: kept beside the VOC tar so that a code
change does not fetch it again (its md5 is checked each time), but not a DVC output, since with train it does
not exist.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.core import layout
from pipeline.core.atomic import atomic_dir
from pipeline.core.cli import run_stage
from pipeline.core.params.data import data_sections
from pipeline.core.params.schema import ParamsFile
from pipeline.ingest.archive import extract_sbd
from pipeline.ingest.download import fetch

log = logging.getLogger("stages.sbd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--tgz", type=Path, default=layout.SBD_TGZ)
    parser.add_argument("--out", type=Path, default=layout.SBD_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = data_sections(ParamsFile.read(args.params))
    if params.train_set != "trainaug":
        with atomic_dir(args.out):
            pass
        log.info("the training set is %s: SBD is not needed, %s left empty", params.train_set, args.out)
        return
    sbd = params.sbd
    fetch(sbd.urls, args.tgz, md5=sbd.md5, size=sbd.size, timeout_s=sbd.timeout_s, retries=sbd.retries,
          urls_key="sbd.urls", otherwise=", or set prepare.train_set: train to train on VOC alone, without SBD")
    extract_sbd(args.tgz, args.out)


if __name__ == "__main__":
    run_stage(main)
