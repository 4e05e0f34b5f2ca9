"""`PreparedSplit`: one split of the prepared directory (`pipeline.prepared.format`) as a torch Dataset, and the
dataset's label set (`read_label_set`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.labels import VOC_LABELS, LabelSet
from pipeline.prepared.format import IMAGES, INDEX, LABEL_SET, LABELS

RERUN = "rerun the prepare stage (dvc repro prepare)"


def read_label_set(root: str | os.PathLike) -> LabelSet:
    """The label set of the prepared directory `root`; VOC's for one prepared before datasets had their own."""
    path = Path(root) / LABEL_SET
    if not path.is_file():
        return VOC_LABELS
    try:
        return LabelSet.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise PipelineError(f"{path}: not a label set ({type(error).__name__}: {error}); {RERUN}") from None


def _check_array(path: Path, length: int) -> None:
    """Refuse, from its header and size alone, an array that is not the flat uint8 array of `length` bytes its
    index describes: a partial copy or a full disk leaves a shorter file, which np.load would refuse only as
    "mmap length is greater than file size"."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(file)
            data_start = file.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; {RERUN}") from None
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path}: not a prepared array ({error}); {RERUN}") from None
    if shape != (length,) or dtype != np.uint8:
        raise PipelineError(f"{path}: holds {dtype} of shape {shape}, but its index describes {length} bytes; "
                            f"{RERUN}")
    if size != data_start + length:
        raise PipelineError(f"{path}: {size - data_start} of its {length} bytes of data are on disk (truncated: a "
                            f"full disk or a partial copy?); {RERUN}")


class PreparedSplit(torch.utils.data.Dataset):
    """One split of a prepared directory: `ds[i]` → (image uint8 3×H×W, label uint8 H×W with 0..20 and 255).

    The arrays are memory-mapped on first access, not in `__init__`, and left out of the pickled state, so the
    dataset is cheap to send to DataLoader workers and each worker maps the files itself.
    """

    def __init__(self, root: str | os.PathLike, split: str):
        self.dir = Path(root) / split
        index_path = self.dir / INDEX
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise PipelineError(f"{index_path}: missing; run the prepare stage first (dvc repro prepare)") from None
        except json.JSONDecodeError:
            raise PipelineError(f"{index_path}: not valid JSON; {RERUN}") from None
        self.ids: list[str] = index["ids"]
        self.sizes: list[tuple[int, int]] = list(zip(index["heights"], index["widths"]))
        self._label_offsets: list[int] = index["label_offsets"]
        self._image_offsets: list[int] = index["image_offsets"]
        self.class_pixels: list[int] | None = index.get("class_pixels")  # None: prepared before it was counted
        pixels = sum(height * width for height, width in self.sizes)
        _check_array(self.dir / IMAGES, 3 * pixels)
        _check_array(self.dir / LABELS, pixels)
        self.labels = read_label_set(root)
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        if self._images is None:
            self._images = np.load(self.dir / IMAGES, mmap_mode="r")
            self._labels = np.load(self.dir / LABELS, mmap_mode="r")
        height, width = self.sizes[i]
        image_at, label_at = self._image_offsets[i], self._label_offsets[i]
        # np.array copies: the tensors must own writable memory, not alias the read-only mapping.
        image = np.array(self._images[image_at:image_at + 3 * height * width]).reshape(3, height, width)
        label = np.array(self._labels[label_at:label_at + height * width]).reshape(height, width)
        return torch.from_numpy(image), torch.from_numpy(label)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_labels": None}
