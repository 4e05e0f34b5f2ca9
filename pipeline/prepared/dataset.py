"""`VOCPrepared`: one split of the prepared directory (`pipeline.prepared.format`) as a torch Dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.prepared.format import IMAGES, INDEX, LABELS


class VOCPrepared(torch.utils.data.Dataset):
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
            raise PipelineError(f"{index_path}: not valid JSON; run the prepare stage again "
                                "(dvc repro prepare)") from None
        self.ids: list[str] = index["ids"]
        self.sizes: list[tuple[int, int]] = list(zip(index["heights"], index["widths"]))
        self._label_offsets: list[int] = index["label_offsets"]
        self._image_offsets: list[int] = index["image_offsets"]
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
