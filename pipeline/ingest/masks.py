"""Reading a dataset's masks as class indices: palette PNGs (the index is the class, as in VOC), single-channel PNGs
(the value is the class) or RGB colour PNGs (each colour one class of `dataset.colors`). The result always marks
ignored pixels with `IGNORE_INDEX`, whatever the dataset's own `ignore_index` or `ignore_color`, so training and
metrics have one ignore value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX, Color

INDEX_MODES = ("P", "L")  # the pixel value is the class index
COLOR_MODES = ("RGB",)


@dataclass(frozen=True)
class MaskReader:
    """How to read one dataset's masks: its number of classes, its ignore value and its class colours."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    colors: tuple[Color, ...] = ()
    ignore_color: Color | None = None
    # {stored value: class index} for masks that store other values (Cityscapes' label ids, ADE20K's 1..150);
    # every value it does not list is ignored. None: the value is the class (`dataset.value_map()`).
    value_map: tuple[tuple[int, int], ...] | None = None

    def table(self) -> np.ndarray | None:
        """The 256-entry lookup of `value_map` (IGNORE_INDEX where a value is not listed), or None."""
        if self.value_map is None:
            return None
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for value, index in self.value_map:
            table[value] = index
        return table

    def check_mode(self, path: str, mode: str) -> None:
        """Refuse a mask from its header alone when its mode is not one this reader decodes."""
        if mode not in INDEX_MODES + COLOR_MODES:
            raise PipelineError(f"{path}: mask mode is {mode!r}; a mask must be a palette PNG ('P', the index is the "
                                "class), a single-channel PNG ('L', the value is the class) or an RGB PNG of the "
                                "colours in dataset.colors")

    def read(self, path: str, image: Image.Image, stored: np.ndarray | None = None) -> np.ndarray:
        """H×W uint8 class indices of the opened mask `image` read from `path` (for messages), IGNORE_INDEX where
        ignored; with a `value_map`, `stored` (256 counts) gains the count of each value as stored."""
        self.check_mode(path, image.mode)
        if image.mode in COLOR_MODES:
            if self.value_map is not None:
                raise PipelineError(f"{path}: an RGB colour mask, but dataset.label_map or reduce_zero_label maps "
                                    "stored values; give single-channel or palette masks, or drop the mapping")
            return self._from_colors(path, np.asarray(image))
        return self.read_values(path, np.asarray(image), stored)

    def read_values(self, path: str, values: np.ndarray, stored: np.ndarray | None = None) -> np.ndarray:
        """Class indices as stored (a palette or single-channel mask, an SBD label), checked; ignored → IGNORE_INDEX.
        With a `value_map`, mapped (every value is valid), and the stored values counted into `stored`."""
        table = self.table()
        if table is not None:
            if stored is not None:
                stored += np.bincount(values.ravel(), minlength=256)
            return table[values]
        counts = np.bincount(values.ravel(), minlength=256)
        counts[self.ignore_index] = 0
        bad = np.flatnonzero(counts[self.num_classes:]) + self.num_classes
        if bad.size:
            shown = ", ".join(f"{value} ({counts[value]} pixels)" for value in bad[:5])
            shown += ", …" if bad.size > 5 else ""
            raise PipelineError(f"{path}: mask values {shown} are neither a class (0..{self.num_classes - 1}) nor "
                                f"the ignore value {self.ignore_index}; fix the mask, or dataset.classes and "
                                "dataset.ignore_index")
        if self.ignore_index == IGNORE_INDEX:
            return values
        return np.where(values == self.ignore_index, IGNORE_INDEX, values).astype(np.uint8)

    def _from_colors(self, path: str, rgb: np.ndarray) -> np.ndarray:
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        found, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
        table = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(self.colors)}
        if self.ignore_color is not None:
            r, g, b = self.ignore_color
            table[(r << 16) | (g << 8) | b] = IGNORE_INDEX
        unknown = [(int(colour), int(count)) for colour, count in zip(found, counts) if int(colour) not in table]
        if unknown:
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) ({n} pixels)" for c, n in unknown[:5])
            raise PipelineError(f"{path}: colours {shown}{', …' if len(unknown) > 5 else ''} are not in "
                                "dataset.colors (nor dataset.ignore_color); add them or fix the mask")
        classes = np.array([table[int(colour)] for colour in found], dtype=np.uint8)
        return classes[inverse].reshape(packed.shape)
