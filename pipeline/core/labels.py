"""Label maps: a dataset's classes and colours (`LabelSet`; VOC's by default), the ignore value, the 256-colour
palette and the palette PNG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.core.voc_classes import CLASSES, colour

NUM_CLASSES = len(CLASSES)
# VOC draws a 'void' band around every object and over ambiguous regions; it is excluded from the loss and
# from every metric, never counted as background. Prepared data always marks ignored pixels with it, whatever value
# a dataset's own masks use (`dataset.ignore_index`), so a dataset has at most 255 classes.
IGNORE_INDEX = 255


def palette() -> np.ndarray:
    """The standard 256-entry VOC colour map as a 256×3 uint8 array (bit-interleaved class index)."""
    return np.array([colour(index) for index in range(256)], dtype=np.uint8)


Color = tuple[int, int, int]


@dataclass(frozen=True)
class LabelSet:
    """What a dataset's class indices mean: `classes[i]` is the name of index i, drawn in `colors[i]`. Carried by
    the prepared data and by every model file, so predictions, renders and the served model need no params."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[Color, ...]

    @classmethod
    def of(cls, name: str, classes: Sequence[str], colors: Sequence[Sequence[int]] | None = None) -> LabelSet:
        """`colors` default to VOC's palette for the first len(classes) indices."""
        if colors is None:
            colors = palette()[:len(classes)].tolist()
        return cls(name, tuple(classes), tuple((int(r), int(g), int(b)) for r, g, b in colors))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette(self) -> np.ndarray:
        """256×3 uint8: the dataset's colours for its classes, VOC's palette for every other index (255 included)."""
        colours = palette()
        colours[:self.num_classes] = self.colors
        return colours

    def class_name(self, index: int) -> str:
        if index == IGNORE_INDEX:
            return "void (ignored)"
        return self.classes[index] if index < self.num_classes else f"class {index}"

    def to_json(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "colors": [list(color) for color in self.colors]}

    @classmethod
    def from_json(cls, raw: dict) -> LabelSet:
        return cls.of(raw["name"], raw["classes"], raw["colors"])


VOC_LABELS = LabelSet.of("voc", CLASSES)


def flat_palette(labels: LabelSet) -> list[int]:
    """The palette as PIL's `putpalette` wants it: 768 ints."""
    return labels.palette().reshape(-1).tolist()


def check_label(label: np.ndarray) -> np.ndarray:
    """`label` as an H×W uint8 map of class indices; a ValueError for any other shape or values."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"a label map is H×W, got shape {label.shape}")
    if label.dtype.kind not in "ui" or (label.size and (label.min() < 0 or label.max() > 255)):
        raise ValueError(f"a label map holds class indices 0..255, got dtype {label.dtype}")
    return label.astype(np.uint8, copy=False)


def label_png(label: np.ndarray, labels: LabelSet) -> Image.Image:
    """An 8-bit palette image whose pixel values are the class indices (255 = void), coloured with the dataset's
    palette: for VOC, the format of its SegmentationClass files and of the VOC evaluation server."""
    label = np.ascontiguousarray(check_label(label))
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(flat_palette(labels))
    return image
