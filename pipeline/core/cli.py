"""What every stage and tool shares: one-line errors at the boundary, logging set-up, and path options."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.core.atomic import is_disk_full, no_space
from pipeline.core.errors import PipelineError
from pipeline.core.layout import ModelPaths, model_paths

_PATH_HELP = {field.name: field.name.replace("_", " ") for field in dataclasses.fields(ModelPaths)}


def run_stage(main: Callable[[], int | None]) -> None:
    """Run a stage's `main` and exit; a `PipelineError` becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # torch, torchvision and (later) mlflow leave hundreds of thousands of objects that live until exit. Frozen, the
    # collector stops re-scanning them during the stage, and the interpreter's shutdown stops collecting them one by
    # one, which took most of a stage's exit. Every output is closed by then; nothing relies on a finaliser.
    gc.freeze()
    try:
        status = main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        # What no stage foresaw (a file vanishing, a permission, a full disk elsewhere): still one line, naming
        # the file, since every output is written atomically and nothing half-written is left to explain.
        if is_disk_full(error):
            print(f"error: {no_space(error.filename or '.')}", file=sys.stderr)
        else:
            print(f"error: {error.filename or 'a file'}: {error.strerror or error}", file=sys.stderr)
        sys.exit(2)
    finally:
        gc.freeze()
    sys.exit(status or 0)


def add_model_path_options(parser: argparse.ArgumentParser, *names: str) -> None:
    """`--model-file`, `--run-file`, … for the `ModelPaths` fields `names`; unset, they default to
    `pipeline.core.layout.model_paths(<model key>)`."""
    group = parser.add_argument_group("paths (default: pipeline/core/layout.py for the model; dvc.yaml passes them)")
    for name in names:
        group.add_argument(f"--{name.replace('_', '-')}", type=Path, metavar="PATH", help=_PATH_HELP[name])


def model_paths_from(args: argparse.Namespace, key: str) -> ModelPaths:
    """The model's paths, with those given on the command line in place of the defaults."""
    return model_paths(key, **{name: getattr(args, name, None) for name in _PATH_HELP})


def venv_tool(name: str) -> str:
    """The command `name` (e.g. dvc) installed beside this interpreter, so it works without an activated venv."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name
