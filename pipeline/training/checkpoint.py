"""Training checkpoints: resume after a crash, a kill or Ctrl-C, and never lose another run's.

A checkpoint is a plain dict (model, optimizer, scheduler, epoch, RNG states, MLflow run id, params hash,
history), written atomically (`pipeline.models.saved.save_state`) and loaded with `weights_only=True`, so a
checkpoint can never run code.

Each set of params keeps its own directory, `checkpoints/<model>/<params hash>/`: a run under other params (say
`dvc exp run -S train.lr=0.02` in the middle of a long run) starts its own set and leaves the others resumable.
Retention: the `KEEP_PARAM_SETS` most recently written sets of a model are kept; an older one is removed when a
new set starts, with a warning naming it. A file that cannot be read is moved aside (`*.unreadable`), not deleted.
A finished run removes its own set (`clear`); `python -m tools.checkpoints` lists them all, and
`make clean-checkpoints` removes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pipeline.models.saved import save_state

log = logging.getLogger(__name__)

KEEP_EPOCHS = 2  # the newest epoch checkpoint plus one to fall back on if the newest is corrupt
KEEP_PARAM_SETS = 3  # per model: the sets of params whose checkpoints stay resumable
INTERRUPTED = "interrupted.pt"
UNREADABLE = ".unreadable"  # suffix of a checkpoint moved aside because it could not be read
_HASH = re.compile(r"[0-9a-f]{16}")


def params_hash(*sections: Any) -> str:
    """Stable hash of the params a model is trained with: a checkpoint is resumed only under the same hash."""
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_directory(root: Path, run_hash: str) -> Path:
    """Where the checkpoints of the params hashed `run_hash` live under a model's `root`."""
    return root / run_hash


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
    """Write `state` as `epoch-NNNN.pt` (a finished epoch) or `interrupted.pt` (mid-epoch), atomically, into one
    params set's `directory`; of its finished epochs the newest `KEEP_EPOCHS` stay."""
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
    """The most advanced readable checkpoint in one params set's `directory` trained with `expected_hash`, or None
    to start from scratch. A file that cannot be read (truncated, corrupt, or from a torch that cannot load it) is
    moved aside as `<name>.unreadable` and the previous one is used; nothing is deleted."""
    if not directory.is_dir():
        return None
    candidates = []
    for path in directory.glob("*.pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            _progress(state)
        except Exception as error:  # truncated zip, bad pickle, missing keys: all mean "unusable"
            aside = path.with_name(path.name + UNREADABLE)
            path.replace(aside)
            log.warning("checkpoint %s is unreadable (%s): moved aside to %s, falling back to an older one", path,
                        error, aside.name)
            continue
        if state.get("params_hash") != expected_hash:
            log.warning("checkpoint %s was trained with other params (%s): not resumed", path,
                        state.get("params_hash"))
            continue
        candidates.append((_progress(state), path, state))
    if not candidates:
        return None
    _, path, state = max(candidates, key=lambda c: c[0])
    log.info("resuming from %s (epoch %d, %d batches into the next)", path, state["epoch"],
             state.get("batches_done", 0))
    return state


class ParamSet(NamedTuple):
    """The checkpoints of one set of params of one model."""

    directory: Path
    epoch: int  # the newest finished epoch it holds (0: only an interrupted first epoch)
    bytes: int
    written: float  # when its newest file was written (seconds since the epoch)


def param_sets(root: Path) -> list[ParamSet]:
    """The params sets under a model's checkpoint `root`, the most recently written first."""
    if not root.is_dir():
        return []
    found = []
    for directory in root.iterdir():
        if not (directory.is_dir() and _HASH.fullmatch(directory.name)):
            continue
        files = [path for path in directory.iterdir() if path.is_file()]
        epochs = [int(path.stem.split("-")[1]) for path in directory.glob("epoch-*.pt")]
        found.append(ParamSet(directory, max(epochs, default=0), sum(path.stat().st_size for path in files),
                              max((path.stat().st_mtime for path in files), default=directory.stat().st_mtime)))
    return sorted(found, key=lambda item: item.written, reverse=True)


def prune(root: Path, current: str, keep: int = KEEP_PARAM_SETS) -> list[Path]:
    """Remove the sets of params under `root` beyond the `keep` most recent, the `current` one always counted
    among them, each with a warning; returns what was removed."""
    others = [item for item in param_sets(root) if item.directory.name != current]
    removed = []
    for item in others[keep - 1:]:
        shutil.rmtree(item.directory)
        log.warning("removed %s: checkpoints of other params (epoch %d, %.0f MB), older than the %d sets of params "
                    "kept per model", item.directory, item.epoch, item.bytes / 1e6, keep)
        removed.append(item.directory)
    return removed


def clear(directory: Path) -> None:
    """Remove a finished run's own checkpoints (one params set's directory); anything moved aside stays."""
    if not directory.is_dir():
        return
    for path in directory.glob("*.pt"):
        path.unlink()
    if not any(directory.iterdir()):
        directory.rmdir()
