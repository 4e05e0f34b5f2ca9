"""Training checkpoints (resume after a crash, a kill or Ctrl-C) and the final model file.

A checkpoint is a plain dict (model, optimizer, scheduler, epoch, RNG states, MLflow run id, params hash,
history), written atomically and loaded with `weights_only=True`, so a checkpoint can never run code. Files are
written through an open handle: `torch.save` to a path would put the (random) temporary file's name inside the
archive, and identical weights would give different bytes, which DVC would see as a new model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_file, is_disk_full, no_space
from pipeline.errors import PipelineError
from pipeline.models import build
from pipeline.params import ModelOptions

log = logging.getLogger(__name__)

KEEP_EPOCHS = 2  # the newest epoch checkpoint plus one to fall back on if the newest is corrupt
_EPOCH_FILE = re.compile(r"epoch-(\d{4})\.pt")
INTERRUPTED = "interrupted.pt"


def params_hash(*sections: Any) -> str:
    """Stable hash of the params a model is trained with: a checkpoint is resumed only under the same hash."""
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(_flatten_python_state(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"][0], tuple(state["python"][1:-1]), state["python"][-1]
    random.setstate((version, internal, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _flatten_python_state(state):
    version, internal, gauss = state
    return [version, *internal, gauss]


def save(directory: Path, state: dict, *, interrupted: bool = False) -> Path:
    """Write `state` as `epoch-NNNN.pt` (a finished epoch) or `interrupted.pt` (mid-epoch), atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (INTERRUPTED if interrupted else f"epoch-{state['epoch']:04d}.pt")
    _save(state, path)
    if not interrupted:
        (directory / INTERRUPTED).unlink(missing_ok=True)
        epochs = sorted(directory.glob("epoch-*.pt"))
        for old in epochs[:-KEEP_EPOCHS]:
            old.unlink()
    return path


def _nbytes(state: Any) -> int:
    """About the size of `state` saved: its tensors' bytes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_nbytes(value) for value in state.values())
    if isinstance(state, list | tuple):
        return sum(_nbytes(value) for value in state)
    return 0


def _progress(state: dict) -> tuple[int, int]:
    return state["epoch"], state.get("batches_done", 0)


def load_latest(directory: Path, expected_hash: str) -> dict | None:
    """The most advanced readable checkpoint trained with `expected_hash`, or None to start from scratch.

    A truncated or corrupt file is reported and skipped (the previous one is used); checkpoints of other
    params are removed, since resuming them would mix two configurations.
    """
    if not directory.is_dir():
        return None
    candidates = []
    for path in directory.glob("*.pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            _progress(state)
        except Exception as error:  # truncated zip, bad pickle, missing keys: all mean "unusable"
            log.warning("checkpoint %s is unreadable (%s): falling back to an older one", path, error)
            continue
        if state.get("params_hash") != expected_hash:
            log.info("checkpoint %s was trained with other params: not resumed", path)
            path.unlink()
            continue
        candidates.append((_progress(state), path, state))
    if not candidates:
        return None
    _, path, state = max(candidates, key=lambda c: c[0])
    log.info("resuming from %s (epoch %d, %d batches into the next)", path, state["epoch"],
             state.get("batches_done", 0))
    return state


def clear(directory: Path) -> None:
    if not directory.is_dir():
        return
    for path in directory.glob("*.pt"):
        path.unlink()


# --- the final model file: what evaluate, render and predict load ----------------------------------------

class _RecordingWriter:
    """A file for `torch.save` that keeps the OSError of a failed write: torch reports a full disk only as
    "unexpected pos", which would hide the reason."""

    def __init__(self, file) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _save(state: dict, path: Path) -> None:
    """Write atomically: on any failure the file at `path` (say, the previous epoch's checkpoint) is untouched and
    the temporary file is gone; a full disk says so, with the space needed."""
    with atomic_file(path) as tmp:
        writer = None
        try:
            with open(tmp, "wb") as file:
                writer = _RecordingWriter(file)
                torch.save(state, writer)
        except (RuntimeError, OSError) as error:
            cause = (writer.error if writer is not None else None) or error
            if is_disk_full(cause):
                tmp.unlink(missing_ok=True)  # closed and gone first, so the message counts its space as free
                raise no_space(path, _nbytes(state)) from None
            raise


def save_model(path: Path, model: torch.nn.Module, *, architecture: str, options: ModelOptions,
               num_classes: int) -> None:
    """The trained network as a plain dict: what to rebuild (architecture, options) and its state dict."""
    state = {
        "architecture": architecture,
        "options": dataclasses.asdict(options),
        "num_classes": num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    _save(state, path)


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild the trained network from `models/<name>/model.pt`, in eval mode, on the CPU (callers place it
    with their runtime policy)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no trained model here; run `dvc repro train@<model>` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PipelineError(f"{path}: not a readable model file ({error}); rerun the train stage") from None
    # The trained weights replace any backbone initialisation: never fetch ImageNet weights just to load.
    options = {key: value for key, value in state["options"].items() if key not in ("pretrained", "weights_sha256")}
    model = build(state["architecture"], num_classes=state["num_classes"], **options)
    model.load_state_dict(state["state_dict"])
    return model.eval()
