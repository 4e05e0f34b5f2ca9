"""Users' own image files: find them, read any of them as RGB, and write their segmentations beside each other.

Any size; RGB, RGBA, grayscale, palette or 16-bit inputs."""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.atomic import require_writable, write_png
from pipeline.errors import PipelineError
from pipeline.inference import predict
from pipeline.render import overlay
from pipeline.runtime import Runtime
from pipeline.voc import label_png

log = logging.getLogger(__name__)


def expand(patterns: Iterable[str]) -> list[Path]:
    """Files named or matched by glob patterns (`**` recursive), in a stable order; a pattern that matches
    nothing is an error naming it."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise PipelineError(f"{pattern}: matches no file")
        if not glob.has_magic(pattern) and Path(pattern).is_dir():
            raise PipelineError(f"{pattern}: is a directory; name image files or a pattern such as "
                                f"'{Path(pattern) / '*.jpg'}'")
        paths += [Path(match) for match in matches if not Path(match).is_dir()]
    if not paths:
        raise PipelineError(f"{', '.join(patterns)}: match only directories, no image file")
    return paths


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


def output_paths(paths: list[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """`(<stem>.png, <stem>_overlay.png)` in `out_dir` for each input, checked before anything is written: two
    inputs that would write the same file, or an output that would replace an input, are one error naming them."""
    inputs = {path.resolve() for path in paths}
    outputs, writer = [], {}
    for path in paths:
        pair = (out_dir / f"{path.stem}.png", out_dir / f"{path.stem}_overlay.png")
        for output in pair:
            if output.resolve() in inputs:
                raise PipelineError(f"{output}: is an input image and would be overwritten by a segmentation; "
                                    "choose another --out directory")
            if output.resolve() in writer:
                raise PipelineError(f"{writer[output.resolve()]} and {path} would both be written to {output}; "
                                    "segment them into separate --out directories or rename one")
            writer[output.resolve()] = path
        outputs.append(pair)
    return outputs


def segment(model: torch.nn.Module, image: np.ndarray, runtime: Runtime) -> np.ndarray:
    """H×W×3 uint8 image → H×W uint8 class map, at the image's own size."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous().to(runtime.device)
    return predict(model, tensor, runtime).to(torch.uint8).cpu().numpy()


def segment_files(model: torch.nn.Module, paths: list[Path], out_dir: Path, runtime: Runtime) -> list[str]:
    """Write `<stem>.png` (VOC palette indices) and `<stem>_overlay.png` per input; returns one line per file
    that could not be read, after processing all the others."""
    outputs = output_paths(paths, out_dir)
    failures = []
    require_writable(out_dir, "make it writable or choose another --out")
    for path, (label_file, overlay_file) in zip(paths, outputs):
        try:
            image = read_rgb(path)
        except PipelineError as error:
            failures.append(str(error))
            log.error("%s", error)
            continue
        labels = segment(model, image, runtime)
        write_png(label_file, label_png(labels))
        write_png(overlay_file, Image.fromarray(overlay(image, labels)))
        log.info("%s → %s", path, label_file)
    return failures
