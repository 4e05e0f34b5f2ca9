"""`tools.predict`'s work: find users' image files, segment each, and write its label PNG and overlay beside the
others, without overwriting an input or writing two results to one file."""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from pipeline.core.atomic import require_writable, write_png
from pipeline.core.errors import PipelineError
from pipeline.core.labels import LabelSet, label_png
from pipeline.core.params.inference import InferenceParams
from pipeline.core.runtime import Runtime
from pipeline.evaluation.predict import WHOLE
from pipeline.reporting.draw import overlay
from pipeline.serving.images import at_size, read_photo, segment

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


def segment_files(model: torch.nn.Module, paths: list[Path], out_dir: Path, runtime: Runtime,
                  *, labels: LabelSet, max_pixels: int | None = None, inference: InferenceParams = WHOLE
                  ) -> list[str]:
    """Write `<stem>.png` (class indices in a palette PNG of `labels`' colours, the input's size) and
    `<stem>_overlay.png` per input; returns one line per file that could not be read, after processing all the
    others. A JPEG above `max_pixels` is predicted
    on a downscaled copy, as the served model does (its overlay stays at that size); other files that large fail."""
    outputs = output_paths(paths, out_dir)
    failures = []
    require_writable(out_dir, "make it writable or choose another --out")
    for path, (label_file, overlay_file) in zip(paths, outputs):
        try:
            image, size = read_photo(path, max_pixels=max_pixels)
        except PipelineError as error:
            failures.append(str(error))
            log.error("%s", error)
            continue
        mask = segment(model, image, runtime, inference)
        write_png(label_file, label_png(at_size(mask, size), labels))
        write_png(overlay_file, Image.fromarray(overlay(image, mask, labels=labels)))
        log.info("%s → %s", path, label_file)
    return failures
