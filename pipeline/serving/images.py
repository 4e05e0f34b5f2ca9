"""Any image file as RGB, and its segmentation at its own size: what the served model and `tools.predict` share.

RGB, RGBA, grayscale, palette or 16-bit inputs; any size up to `serving.max_pixels`, and JPEGs of any size (predicted
on a downscaled copy, the mask scaled back to the file's size)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import PipelineError
from pipeline.core.params.inference import InferenceParams
from pipeline.core.runtime import Runtime
from pipeline.evaluation.predict import WHOLE, predict_mask


def read_rgb(path: Path | BinaryIO, *, name: str | None = None) -> np.ndarray:
    """H×W×3 uint8 from any PIL-readable image file (a path, or an open binary file named `name` in errors),
    camera rotation applied, at full size."""
    return read_photo(path, name=name)[0]


def read_photo(path: Path | BinaryIO, *, name: str | None = None,
               max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The image's H×W×3 uint8 pixels and its full (height, width), camera rotation applied.

    Above `max_pixels` (`serving.max_pixels`) a JPEG is decoded at a reduced scale (libjpeg's 1/2, 1/4 or 1/8
    via PIL's draft mode, so the full-size image never exists in memory) and resized to fit `max_pixels`; any other
    format that large is refused from its header, before it is decoded. 16-bit and 32-bit grayscale are scaled to
    8 bits by their full range (PIL's own conversion would clip everything above 255 to white); alpha is dropped.
    """
    shown = name or path
    try:
        with _open(path, bounded=max_pixels is not None) as img:
            width, height = img.size
            rotated = img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)  # by a quarter turn
            if rotated:
                width, height = height, width
            target = _fit(height, width, max_pixels)
            if target is not None:
                if img.format != "JPEG":
                    raise PipelineError(f"{shown}: {width}×{height} pixels, above serving.max_pixels "
                                        f"({max_pixels:,}); only JPEGs are predicted on a downscaled copy: send "
                                        "a JPEG or a smaller image")
                img.draft("RGB", target if rotated else target[::-1])  # (width, height) of the file as stored
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                values = np.asarray(img, dtype=np.float64)
                full_range = 65535.0 if img.mode.startswith("I;16") else max(float(values.max()), 1.0)
                gray = np.clip(values / full_range * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2), (height, width)
            img = img.convert("RGB")
            if target is not None and img.size != (target[1], target[0]):
                img = img.resize((target[1], target[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy(), (height, width)
    except Image.DecompressionBombError:  # a header declaring, say, 30000×30000 pixels: never decoded
        limit = f"serving.max_pixels ({max_pixels:,})" if max_pixels else f"{Image.MAX_IMAGE_PIXELS * 2} pixels"
        raise PipelineError(f"{shown}: skipped, larger than {limit}") from None
    except UnidentifiedImageError:  # PIL's own message names the file object, not the file
        raise PipelineError(f"{shown}: not a readable image (not a format PIL can decode, such as JPEG "
                            "or PNG)") from None
    except (OSError, ValueError) as error:
        raise PipelineError(f"{shown}: not a readable image ({error})") from None


def _open(path: Path | BinaryIO, *, bounded: bool) -> Image.Image:
    """PIL's lazy open (the header only); `bounded`: without its warning above 89 MP, since such an image is never
    decoded at full size here."""
    with warnings.catch_warnings():
        if bounded:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _fit(height: int, width: int, max_pixels: int | None) -> tuple[int, int] | None:
    """The largest (height, width) of the same shape within `max_pixels`, or None when the image fits already."""
    if max_pixels is None or height * width <= max_pixels:
        return None
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


def at_size(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map scaled to (height, width) by nearest neighbour (class ids are never blended); as is if equal."""
    if labels.shape == size:
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.Resampling.NEAREST))


def segment(model: torch.nn.Module, image: np.ndarray, runtime: Runtime, inference: InferenceParams = WHOLE
            ) -> np.ndarray:
    """H×W×3 uint8 image → H×W uint8 class map, at the image's own size (`inference`: whole or slide mode, TTA)."""
    return predict_mask(model, torch.from_numpy(image).permute(2, 0, 1), runtime, inference).numpy()
