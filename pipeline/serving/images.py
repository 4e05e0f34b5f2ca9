"""Any image file as RGB, and its segmentation at its own size: what the served model and `tools.predict` share.

Any size; RGB, RGBA, grayscale, palette or 16-bit inputs."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import PipelineError
from pipeline.core.runtime import Runtime
from pipeline.evaluation.predict import predict


def read_rgb(path: Path | BinaryIO, *, name: str | None = None) -> np.ndarray:
    """H×W×3 uint8 from any PIL-readable image file (a path, or an open binary file named `name` in errors),
    camera rotation applied.

    16-bit and 32-bit grayscale are scaled to 8 bits by their full range (PIL's own conversion would clip
    everything above 255 to white); alpha is dropped.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                values = np.asarray(img, dtype=np.float64)
                full_range = 65535.0 if img.mode.startswith("I;16") else max(float(values.max()), 1.0)
                gray = np.clip(values / full_range * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError:  # a header declaring, say, 30000×30000 pixels: never decoded
        raise PipelineError(f"{name or path}: skipped, larger than {Image.MAX_IMAGE_PIXELS * 2} pixels") from None
    except UnidentifiedImageError:  # PIL's own message names the file object, not the file
        raise PipelineError(f"{name or path}: not a readable image (not a format PIL can decode, such as JPEG "
                            "or PNG)") from None
    except (OSError, ValueError) as error:
        raise PipelineError(f"{name or path}: not a readable image ({error})") from None


def segment(model: torch.nn.Module, image: np.ndarray, runtime: Runtime) -> np.ndarray:
    """H×W×3 uint8 image → H×W uint8 class map, at the image's own size."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous().to(runtime.device)
    return predict(model, tensor, runtime).to(torch.uint8).cpu().numpy()
