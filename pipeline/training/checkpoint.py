"""Training checkpoints: resume after a crash, a kill or Ctrl-C.

A checkpoint is a plain dict (model, optimizer, scheduler, epoch, RNG states, MLflow run id, params hash,
history), written atomically (`pipeline.models.saved.save_state`) and loaded with `weights_only=True`, so a
checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import torch

from pipeline.models.saved import save_state

log = logging.getLogger(__name__)

KEEP_EPOCHS = 2  # the newest epoch checkpoint plus one to fall back on if the newest is corrupt
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
    save_state(state, path)
    if not interrupted:
        (directory / INTERRUPTED).unlink(missing_ok=True)
        epochs = sorted(directory.glob("epoch-*.pt"))
        for old in epochs[:-KEEP_EPOCHS]:
            old.unlink()
    return path


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
