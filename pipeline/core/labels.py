"""Label maps as VOC defines them: the class names, the ignore value, the colour palette and the palette PNG."""

from __future__ import annotations

import numpy as np
from PIL import Image

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
NUM_CLASSES = len(CLASSES)
# VOC draws a 'void' band around every object and over ambiguous regions; it is excluded from the loss and
# from every metric, never counted as background.
IGNORE_INDEX = 255


def palette() -> np.ndarray:
    """The standard 256-entry VOC colour map as a 256×3 uint8 array (bit-interleaved class index)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[index] = (r, g, b)
    return colours


def flat_palette() -> list[int]:
    """The palette as PIL's `putpalette` wants it: 768 ints."""
    return palette().reshape(-1).tolist()


def check_label(label: np.ndarray) -> np.ndarray:
    """`label` as an H×W uint8 map of class indices; a ValueError for any other shape or values."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"a label map is H×W, got shape {label.shape}")
    if label.dtype.kind not in "ui" or (label.size and (label.min() < 0 or label.max() > 255)):
        raise ValueError(f"a label map holds class indices 0..255, got dtype {label.dtype}")
    return label.astype(np.uint8, copy=False)


def label_png(label: np.ndarray) -> Image.Image:
    """An 8-bit palette image whose pixel values are the class indices (255 = void), coloured with the VOC
    palette: the format of the dataset's SegmentationClass files and of the VOC evaluation server."""
    label = np.ascontiguousarray(check_label(label))
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(flat_palette())
    return image
