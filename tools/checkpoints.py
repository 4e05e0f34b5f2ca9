"""The checkpoints of unfinished runs: one directory per model and set of params (checkpoints/<model>/<params
hash>/, see pipeline/training/checkpoint.py), listed, or removed with --remove (`make clean-checkpoints`).

    python -m tools.checkpoints [--root checkpoints] [--model deeplab] [--remove]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from pipeline.core import layout
from pipeline.core.cli import run_stage
from pipeline.training.checkpoint import param_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=layout.CHECKPOINTS)
    parser.add_argument("--model", help="one model's checkpoints only (a key of `models` in params.yaml)")
    parser.add_argument("--remove", action="store_true", help="remove them, naming each")
    args = parser.parse_args()
    models = [args.root / args.model] if args.model else sorted(p for p in args.root.glob("*") if p.is_dir())
    found = 0
    for model in models:
        for item in param_sets(model):
            found += 1
            written = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.written))
            print(f"{'removed ' if args.remove else ''}{item.directory}: epoch {item.epoch}, "
                  f"{item.bytes / 1e6:.0f} MB, written {written}")
            if args.remove:
                shutil.rmtree(item.directory)
        for legacy in sorted(model.glob("*.pt*")):  # written before each set of params had its directory
            found += 1
            print(f"{'removed ' if args.remove else ''}{legacy}: from an older layout, never resumed")
            if args.remove:
                legacy.unlink()
    if not found:
        print(f"no checkpoints under {args.root}")


if __name__ == "__main__":
    run_stage(main)
