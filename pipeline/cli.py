"""What every stage script shares: one-line errors at the boundary, and logging set-up."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Callable

from pipeline.errors import PipelineError


def run_stage(main: Callable[[], int | None]) -> None:
    """Run a stage's `main`; a `PipelineError` becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        status = main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def venv_tool(name: str) -> str:
    """The command `name` (e.g. dvc) installed beside this interpreter, so it works without an activated venv."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name
