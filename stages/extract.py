"""Stage `extract`: unpack the dataset's archive as <out>, the tree prepare reads: VOC's segmentation subset as
<out>/VOC2012 (dataset.layout voc), or a folders dataset's tar, tar.gz or zip whole. With data.path naming your own
directory there is nothing to unpack, and <out> is left empty.

    python -m stages.extract [--archive data/raw/source.archive] [--out data/source]
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
from pipeline.ingest.layouts import dataset_layout, extract_source

log = logging.getLogger("stages.extract")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--archive", type=Path, default=layout.SOURCE_ARCHIVE)
    parser.add_argument("--out", type=Path, default=layout.SOURCE, help="the dataset's directory to create")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params_file = ParamsFile.read(args.params)
    params = data_sections(params_file)
    with params_file.naming_errors():
        dataset_layout(params.dataset)  # the layout's own keys, checked before any work
    if params.data.from_directory:
        log.info("data.path is %s: the dataset is read from there, nothing to extract", params.data.path)
        with atomic_dir(args.out):
            pass  # an empty directory, replacing any earlier extraction
        return
    extract_source(args.archive, args.out, params.dataset)


if __name__ == "__main__":
    run_stage(main)
