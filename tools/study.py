"""Fine-tuning and the losses for imbalanced classes, measured on generated data (devtools/studies.py): prints the
tables of docs/results.md. CPU, 5-10 minutes each on 2 cores; tracking off (no MLflow runs are kept).

    python -m tools.study losses
    python -m tools.study finetune
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from devtools import studies
from pipeline.core.cli import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(studies.STUDIES))
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # the discard port: tracking off, nothing kept
    with tempfile.TemporaryDirectory() as workdir:
        print(studies.STUDIES[args.study](Path(workdir)))


if __name__ == "__main__":
    run_stage(main)
