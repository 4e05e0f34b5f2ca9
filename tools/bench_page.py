"""Publish a `make bench` run on the performance page: copy its results to docs/bench/<device type>.json and
regenerate every bench section of docs/performance.md from the files they name.

    python -m tools.bench_page [--results bench/results.json] [--page docs/performance.md]
    python -m tools.bench_page --check      # exit 2 if the page is not what its results files render
    python -m tools.bench_page --refresh    # regenerate the page from the committed results files only
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devtools import bench_page
from pipeline.core.cli import run_stage
from pipeline.core.errors import PipelineError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--page", type=Path, default=Path("docs/performance.md"))
    parser.add_argument("--check", action="store_true", help="only check that the page is up to date")
    parser.add_argument("--refresh", action="store_true", help="regenerate the page from docs/bench/*.json only")
    args = parser.parse_args()
    rendered = bench_page.render(args.page.read_text(), args.page.parent)
    if args.check:
        if rendered != args.page.read_text():
            raise PipelineError(f"{args.page} differs from what its results files render; run python -m "
                                f"tools.bench_page --refresh")
        print(f"{args.page}: up to date with its results files")
        return
    if args.refresh:
        bench_page.write_text(args.page, rendered)
        print(f"{args.page} regenerated from its results files")
        return
    if not args.results.is_file():
        raise PipelineError(f"{args.results} not found; run `make bench` first")
    target = bench_page.publish(args.results, args.page)
    print(f"{args.results} → {target}; {args.page} regenerated")


if __name__ == "__main__":
    run_stage(main)
