"""Figures logged to MLflow: the confusion matrix and the training curves, drawn with matplotlib off-screen."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image


def _figure_to_image(figure: Figure) -> Image.Image:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Image.Image:
    """Heatmap of the confusion matrix with each ground-truth row normalised to 1 (the diagonal is the recall);
    classes without ground-truth pixels are left blank, cells of at least 1 % are labelled in percent."""
    matrix = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix, dtype=np.float64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {n} class names")
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.full_like(matrix, math.nan), where=totals > 0)
    size = max(6.0, 0.38 * n + 2.5)
    figure = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad=(0.93, 0.93, 0.93))
    shown = axes.imshow(np.ma.masked_invalid(normalised), cmap=cmap, vmin=0.0, vmax=1.0)
    for (row, col), value in np.ndenumerate(normalised):
        if value >= 0.01:
            axes.text(col, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 0.5 else "black")
    axes.set_xticks(range(n), class_names, rotation=60, ha="right", rotation_mode="anchor", fontsize=9)
    axes.set_yticks(range(n), class_names, fontsize=9)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title("Confusion matrix, % of each ground-truth class")
    figure.colorbar(shown, ax=axes, fraction=0.04, pad=0.02)
    return _figure_to_image(figure)


def history_figure(rows: Sequence[dict]) -> Image.Image:
    """Train loss, learning rate and validation mIoU per epoch; epochs without a value (no validation that
    epoch, a None or NaN) are skipped rather than drawn as zero."""
    figure = Figure(figsize=(13, 3.8), dpi=100, layout="constrained")
    for axes, key, label in zip(figure.subplots(1, 3), ("loss", "lr", "val_miou"), ("train loss", "learning rate",
                                                                                  "val mIoU")):
        points = [(row["epoch"], float(row[key])) for row in rows
                  if row.get(key) is not None and not math.isnan(float(row[key]))]
        axes.set_title(label)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not points:
            axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes, color="grey")
            continue
        epochs, values = zip(*points)
        axes.plot(epochs, values, marker="o" if key == "val_miou" else None, markersize=4)
        if key == "lr":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if key == "val_miou":
            best = int(np.argmax(values))
            axes.plot(epochs[best], values[best], marker="*", markersize=12, color="tab:orange")
            # Anchored on the side facing the plot's middle, so a best value at either end stays inside.
            axes.annotate(f"best {values[best]:.3f} (epoch {epochs[best]})", (epochs[best], values[best]),
                          textcoords="offset points", xytext=(0, -16), fontsize=9,
                          ha="right" if best >= len(values) / 2 else "left")
    return _figure_to_image(figure)
