"""`export@<model>`'s work: the trained network as an ONNX graph with dynamic batch, height and width, checked
against PyTorch on generated images before it is written.

The check runs both on the same images at several sizes, none of them the traced example's: a graph that had
frozen a size-dependent branch of the example (DeepLab's atrous shortcut did, before it learned that an export
takes the full convolution) disagrees there. The file is only written when every size agrees."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.core.atomic import atomic_file
from pipeline.core.errors import PipelineError, first_line
from pipeline.core.params.export import ExportParams
from pipeline.export.onnx_model import INPUT_NAME, OUTPUT_NAME, OnnxModel
from pipeline.prepared.transforms import normalize

log = logging.getLogger(__name__)

EXAMPLE_SIZE = (256, 320)  # the traced example's height and width; the graph holds for every size
IMAGES_PER_SIZE = 2


def check_images(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 N×3×H×W images with regions and edges (random colours at 1/16 resolution, upsampled, plus noise),
    the same for every run: closer to photos than white noise, so a trained model's logits are peaked."""
    generator = torch.Generator().manual_seed(seed * 100_003 + height * 1009 + width)
    coarse = torch.rand(IMAGES_PER_SIZE, 3, height // 16 + 2, width // 16 + 2, generator=generator) * 255
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.randn(IMAGES_PER_SIZE, 3, height, width, generator=generator) * 8
    return (smooth + noise).clamp(0, 255).round().to(torch.uint8)


def export_onnx(model: torch.nn.Module, path: Path, opset: int) -> None:
    """Write `model` (in eval mode, float32, on the CPU) to `path` as ONNX with dynamic batch, height and width."""
    for name in ("onnx_ir", "onnxscript"):  # a line per graph pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    # A batch of two: torch.export specialises a dimension traced at size 1, and a network that reshapes with its
    # batch size (SegFormer's attention) would then accept single images only.
    example = torch.zeros(2, 3, *EXAMPLE_SIZE)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      opset_version=opset, dynamo=True, dynamic_shapes=(dims,), external_data=False,
                      verbose=False)


@torch.no_grad()
def compare(model: torch.nn.Module, exported: torch.nn.Module, sizes: list[list[int]]) -> list[dict]:
    """Per size: the share of pixels where both give the same class, and the largest logit difference."""
    rows = []
    for height, width in sizes:
        batch = normalize(check_images(height, width))
        reference, other = model(batch), exported(batch)
        rows.append({"size": [height, width], "images": len(batch),
                     "agreement": float((reference.argmax(1) == other.argmax(1)).double().mean()),
                     "max_abs_logit_diff": float((reference - other).abs().max())})
    return rows


def export_checked(model: torch.nn.Module, path: Path, params: ExportParams) -> dict:
    """Export `model` to `path` and check it; the report for `metrics/<model>/export.json`. When the check fails
    the error names the worst size and nothing is written."""
    model = model.to("cpu", torch.float32).eval()
    with atomic_file(path) as scratch:
        try:
            export_onnx(model, scratch, params.opset)
        except Exception as error:  # noqa: BLE001 - the exporter's refusals have many types; each is this one line
            raise PipelineError(f"{path}: not written: {type(model).__name__} does not export to ONNX with dynamic "
                                f"sizes ({first_line(error)}); see docs/params-and-models.md for the networks that "
                                "do") from None
        try:
            rows = compare(model, OnnxModel(scratch), params.check_sizes)
        except Exception as error:  # noqa: BLE001 - ONNX Runtime's errors are its own types
            raise PipelineError(f"{path}: not written: ONNX Runtime cannot run the exported graph at every size "
                                f"({first_line(error)}); the network has an operation whose ONNX form holds for the "
                                "traced size only (adaptive pooling: PSPNet, UPerNet): see "
                                "docs/params-and-models.md") from None
        worst = min(rows, key=lambda row: row["agreement"])
        report = {"opset": params.opset, "bytes": scratch.stat().st_size,
                  "agreement": worst["agreement"], "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
                  "min_agreement": params.min_agreement, "sizes": rows,
                  "torch": torch.__version__.split("+")[0], "onnxruntime": _onnxruntime_version()}
        if worst["agreement"] < params.min_agreement:
            height, width = worst["size"]
            raise PipelineError(f"{path}: not written: ONNX Runtime agrees with PyTorch on {worst['agreement']:.4%} "
                                f"of the pixels at {height}×{width}, below export.min_agreement "
                                f"{params.min_agreement:.4%} (largest logit difference "
                                f"{worst['max_abs_logit_diff']:.3g}); the model has an operation the exporter "
                                "translates differently: see docs/deploy.md")
    log.info("%s: %d bytes, agreement %.6f, largest logit difference %.3g", path, report["bytes"],
             report["agreement"], report["max_abs_logit_diff"])
    return report


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


