"""Pictures of labels and predictions: colours, overlays, per-image panels and model comparison grids.

Everything is deterministic for the same inputs (fixed sizes, the font bundled with matplotlib, PNGs written by PIL
without metadata), so DVC sees an unchanged output as unchanged and reruns hit the cache.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.core.labels import IGNORE_INDEX, LabelSet, check_label

MARGIN = 12
GAP = 8
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
ERROR_RGB = (255, 48, 48)
VOID_GREY = (150, 150, 150)
# Dimmed enough that red errors and grey void stand out, bright enough to recognise the scene.
ERROR_DIM = 0.45
OVERLAY_ROWS = 512  # rows blended at a time
PANEL_MIN_TILE = 240


def _check_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (*shape, 3):
        raise ValueError(f"expected an H×W×3 uint8 image of size {shape}, got {image.dtype} {image.shape}")
    return image


def colorize(label: np.ndarray, labels: LabelSet) -> np.ndarray:
    """H×W class indices → H×W×3 uint8 class colours (void 255 → VOC's cream outline colour)."""
    return labels.palette()[check_label(label)]


def overlay(image: np.ndarray, label: np.ndarray, *, labels: LabelSet, alpha: float = 0.5) -> np.ndarray:
    """Blend the class colours over the photo with weight `alpha`.

    Void (255) pixels and those of a class coloured black (VOC's background) keep the photo untouched: black would
    only darken the scene, and the void band would draw a cream outline around every object.
    """
    label = check_label(label)
    image = _check_image(image, label.shape)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    colours = labels.palette()
    coloured = colours.any(axis=-1)  # per class: drawn, or left as the photo (black, void)
    out = image.copy()
    for top in range(0, label.shape[0], OVERLAY_ROWS):  # in bands: a 48 MP photo's float64 copy would be 1 GB
        rows = slice(top, top + OVERLAY_ROWS)
        band = label[rows]
        objects = (band != IGNORE_INDEX) & coloured[band]
        blended = (1 - alpha) * image[rows][objects].astype(np.float64) + alpha * colours[band[objects]]
        out[rows][objects] = np.rint(blended).astype(np.uint8)
    return out


def _errors(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, float]:
    """The dimmed photo in grey with wrong pixels red and void grey, and the share of labelled pixels wrong."""
    grey = np.rint(image.astype(np.float64).mean(axis=2) * ERROR_DIM).astype(np.uint8)
    tile = np.repeat(grey[..., None], 3, axis=2)
    labelled = truth != IGNORE_INDEX
    wrong = labelled & (prediction != truth)
    tile[wrong] = ERROR_RGB
    tile[~labelled] = VOID_GREY
    share = float(wrong.sum() / labelled.sum()) if labelled.any() else math.nan
    return tile, share


@functools.cache
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    # matplotlib ships DejaVu Sans, so every machine with the project's dependencies renders the same glyphs.
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _text(text: str, size: int, *, bold: bool = False, max_width: int | None = None) -> Image.Image:
    """One line of text on the background, shortened with an ellipsis to fit `max_width`."""
    font = _font(size, bold)
    if max_width is not None and font.getlength(text) > max_width:
        while text and font.getlength(text + "…") > max_width:
            text = text[:-1]
        text += "…"
    ascent, descent = font.getmetrics()
    image = Image.new("RGB", (max(1, math.ceil(font.getlength(text))), ascent + descent), BACKGROUND)
    ImageDraw.Draw(image).text((0, 0), text, font=font, fill=INK)
    return image


def _hstack(parts: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    width = sum(part.width for part in parts) + gap * (len(parts) - 1)
    canvas = Image.new("RGB", (width, max(part.height for part in parts)), BACKGROUND)
    x = 0
    for part in parts:
        canvas.paste(part, (x, 0))
        x += part.width + gap
    return canvas


def _vstack(parts: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    height = sum(part.height for part in parts) + gap * (len(parts) - 1)
    canvas = Image.new("RGB", (max(part.width for part in parts), height), BACKGROUND)
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height + gap
    return canvas


def _centered(part: Image.Image, width: int) -> Image.Image:
    canvas = Image.new("RGB", (max(width, part.width), part.height), BACKGROUND)
    canvas.paste(part, ((canvas.width - part.width) // 2, 0))
    return canvas


def _with_margin(part: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (part.width + 2 * MARGIN, part.height + 2 * MARGIN), BACKGROUND)
    canvas.paste(part, (MARGIN, MARGIN))
    return canvas


def _legend(indices: Sequence[int], width: int, labels: LabelSet, size: int = 14) -> Image.Image:
    """Colour swatches with class names, flowing left to right and wrapping at `width`."""
    colours = labels.palette()
    items = []
    for index in indices:
        name = _text(labels.class_name(index), size)
        swatch = Image.new("RGB", (name.height, name.height), tuple(int(c) for c in colours[index]))
        ImageDraw.Draw(swatch).rectangle((0, 0, swatch.width - 1, swatch.height - 1), outline=INK)
        items.append(_hstack([swatch, name], gap=5))
    lines: list[list[Image.Image]] = [[]]
    used = 0
    for item in items:
        if lines[-1] and used + 3 * GAP + item.width > width:
            lines.append([])
            used = 0
        used += item.width + (3 * GAP if lines[-1] else 0)
        lines[-1].append(item)
    return _vstack([_hstack(line, gap=3 * GAP) for line in lines if line], gap=GAP // 2)


def _present(labels: Sequence[np.ndarray]) -> list[int]:
    """Class indices that occur in any of the label maps, in class order with void last."""
    return sorted(set().union(*(np.unique(label).tolist() for label in labels)), key=lambda i: (i == IGNORE_INDEX, i))


def _captioned(tile: Image.Image, caption: str, size: int = 15) -> Image.Image:
    return _vstack([_text(caption, size, max_width=tile.width), tile], gap=4)


def panel(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, *, title: str = "",
          labels: LabelSet) -> Image.Image:
    """image | ground truth | prediction | errors, at the image's own resolution (a whole multiple of it when
    narrower than PANEL_MIN_TILE), with a legend of the classes in truth or prediction. In the error tile, wrong
    labelled pixels are red on the dimmed photo and void is grey."""
    truth, prediction = check_label(truth), check_label(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"ground truth {truth.shape} and prediction {prediction.shape} differ in size")
    image = _check_image(image, truth.shape)
    errors, share = _errors(image, truth, prediction)
    # Small inputs are enlarged by a whole factor (each pixel a block) so captions fit and pixels stay exact.
    factor = math.ceil(PANEL_MIN_TILE / image.shape[1])
    tiles = [
        Image.fromarray(array).resize((image.shape[1] * factor, image.shape[0] * factor), Image.Resampling.NEAREST)
        for array in (image, colorize(truth, labels), colorize(prediction, labels), errors)
    ]
    captions = ["image", "ground truth", "prediction", f"errors {share:.1%} (red; void grey)"]
    row = _hstack([_captioned(tile, caption) for tile, caption in zip(tiles, captions)])
    parts = [_text(title, 20, bold=True, max_width=row.width)] if title else []
    parts += [row, _legend(_present([truth, prediction]), row.width, labels)]
    return _with_margin(_vstack(parts, gap=2 * GAP))


def _fit(tile: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """Scale the longer side to `size` and centre in a cell `size` wide, so columns line up whatever the
    orientation; the cell is only as tall as the picture, so captions sit right above it."""
    scale = size / max(tile.size)
    resized = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), resample)
    return _centered(resized, size)


def compare_grid(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: dict[str, Sequence[np.ndarray]],
    ids: Sequence[str],
    *,
    scores: dict[str, Sequence[float]] | None = None,
    tile_size: int = 240,
    labels: LabelSet,
) -> Image.Image:
    """One row per image: image | ground truth | one column per model (in `predictions` order), each cell fitted
    into a tile_size square; `scores[model][row]` (e.g. the per-image IoU) is printed above that model's cell."""
    rows = len(ids)
    if len(images) != rows or len(truths) != rows:
        raise ValueError(f"{len(images)} images, {len(truths)} ground truths and {rows} ids: one each per row")
    for model, maps in {**predictions, **(scores or {})}.items():
        if len(maps) != rows:
            raise ValueError(f"model {model!r} has {len(maps)} entries for {rows} rows")
    models = list(predictions)
    header = [_centered(_text(name, 16, bold=True, max_width=tile_size), tile_size) for name in
              ["image", "ground truth", *models]]
    lines = [_hstack(header)]
    all_maps = []
    for row in range(rows):
        truth = check_label(truths[row])
        maps = [truth]
        for model in models:
            maps.append(check_label(predictions[model][row]))
            if maps[-1].shape != truth.shape:
                raise ValueError(f"{model!r} prediction for {ids[row]} is {maps[-1].shape}, truth is {truth.shape}")
        image = _check_image(images[row], truth.shape)
        all_maps += maps
        cells = [_fit(Image.fromarray(image), tile_size, Image.Resampling.BILINEAR)]
        cells += [_fit(Image.fromarray(colorize(m, labels)), tile_size, Image.Resampling.NEAREST) for m in maps]
        captions = [str(ids[row]), ""] + [f"IoU {scores[m][row]:.3f}" if scores and m in scores else "" for m in models]
        lines.append(_hstack([_captioned(cell, caption, 13) for cell, caption in zip(cells, captions)]))
    grid = _vstack(lines, gap=2 * GAP)
    return _with_margin(_vstack([grid, _legend(_present(all_maps), grid.width, labels)], gap=2 * GAP))
