"""Write the code deps of dvc.yaml from the stages' imports, and its history plots' lines from params.yaml's models
(`make deps`; see devtools/deps.py). Run it after adding a module, an import, an architecture or a model entry;
`make test` fails until dvc.yaml is what this writes.

    python -m tools.deps
"""

from __future__ import annotations

import argparse

from devtools import deps
from pipeline.core.cli import run_stage


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("dvc.yaml rewritten" if deps.write() else "dvc.yaml: up to date")


if __name__ == "__main__":
    run_stage(main)
