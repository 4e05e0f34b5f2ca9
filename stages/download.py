"""Stage `download`: fetch the dataset's archive (VOC 2012's trainval tar by default) from the first source in
data.urls that delivers it. With data.path naming your own directory there is nothing to fetch: an archive already
here is kept, else an empty placeholder is written, since DVC needs the stage's output.

    python -m stages.download [--out data/raw/source.archive]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.core import layout
from pipeline.core.atomic import write_text
from pipeline.core.cli import run_stage
from pipeline.core.params.data import data_sections
from pipeline.core.params.schema import ParamsFile
from pipeline.ingest.download import fetch

log = logging.getLogger("stages.download")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=layout.SOURCE_ARCHIVE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = data_sections(ParamsFile.read(args.params)).data
    if data.from_directory:
        log.info("data.path is %s: the dataset is read from there, nothing to download", data.path)
        if not args.out.exists():
            write_text(args.out, "")
        return
    fetch(data.urls, args.out, md5=data.md5, size=data.size, timeout_s=data.timeout_s, retries=data.retries)


if __name__ == "__main__":
    run_stage(main)
