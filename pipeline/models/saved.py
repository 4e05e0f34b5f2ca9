"""The trained model file (`models/<key>/model.pt`): what to rebuild (architecture, options), the dataset's label set
(so predictions are named and coloured without params), and its state dict, as a plain dict read back with
`weights_only=True`, so a model file can never run code.

Files are written atomically through an open handle: `torch.save` to a path would put the (random) temporary
file's name inside the archive, and identical weights would give different bytes, which DVC would see as a new
model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pipeline.core.atomic import atomic_file, is_disk_full, no_space
from pipeline.core.errors import PipelineError
from pipeline.core.labels import VOC_LABELS, LabelSet
from pipeline.models.registry import build


def _nbytes(state: Any) -> int:
    """About the size of `state` saved: its tensors' bytes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_nbytes(value) for value in state.values())
    if isinstance(state, list | tuple):
        return sum(_nbytes(value) for value in state)
    return 0


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


def save_state(state: dict, path: Path) -> None:
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


def save_model(path: Path, model: torch.nn.Module, *, architecture: str, options: Any, labels: LabelSet) -> None:
    """The trained network as a plain dict: what to rebuild (architecture, options, classes) and its state dict."""
    state = {
        "architecture": architecture,
        "options": dataclasses.asdict(options),
        "num_classes": labels.num_classes,
        "labels": labels.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_state(state, path)


class SavedModel(NamedTuple):
    network: torch.nn.Module  # in eval mode, on the CPU
    labels: LabelSet  # what its output channels are


def _read_state(path: Path, *, mmap: bool = False) -> dict:
    if not path.is_file():
        raise PipelineError(f"{path}: no trained model here; run `dvc repro train@<model>` first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        raise PipelineError(f"{path}: not a readable model file ({error}); rerun the train stage") from None


def _labels(state: dict) -> LabelSet:
    """VOC's for a file written before datasets had their own."""
    return LabelSet.from_json(state["labels"]) if "labels" in state else VOC_LABELS


def load_saved(path: str | Path) -> SavedModel:
    """Rebuild the trained network from `models/<name>/model.pt`, in eval mode, on the CPU (callers place it
    with their runtime policy), with its label set."""
    path = Path(path)
    state = _read_state(path)
    # The trained weights replace any pretrained ones: never fetch or read those just to load.
    model = build(state["architecture"], num_classes=state["num_classes"], weights=False, where=str(path),
                  **state["options"])
    model.load_state_dict(state["state_dict"])
    return SavedModel(model.eval(), _labels(state))


def saved_labels(path: str | Path) -> LabelSet:
    """The label set of a model file alone: its weights are memory-mapped, never read, and no network is built."""
    return _labels(_read_state(Path(path), mmap=True))


def saved_architecture(path: str | Path) -> str:
    """The architecture of a model file alone (its weights memory-mapped, never read)."""
    return _read_state(Path(path), mmap=True)["architecture"]


def load_model(path: str | Path) -> torch.nn.Module:
    """The network alone of `load_saved`."""
    return load_saved(path).network
