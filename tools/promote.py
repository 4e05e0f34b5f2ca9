"""Point the registry's `champion` alias at the best evaluated version of a model (by val mIoU).

    python -m tools.promote --model deeplab          # voc-deeplab@champion, what `make serve` serves

Uses MLFLOW_TRACKING_URI, or the local store (mlflow.db) when it is not set.
"""

from __future__ import annotations

import argparse

from pipeline.core.cli import run_stage
from pipeline.core.params.whole import load
from pipeline.tracking.registry import promote


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load(args.params)
    print(promote(params.model_key(args.model), params.dataset.name))


if __name__ == "__main__":
    run_stage(main)
