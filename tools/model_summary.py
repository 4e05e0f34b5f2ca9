"""Print a markdown table of every registered architecture's variants (`variants` of `@register_model`): parameters
and GFLOPs of one 320×480 image (for the README), with VOC's 21 classes.

Not a DVC stage: nothing is trained or read. The models are built on PyTorch's meta device, which tracks shapes
without allocating or computing, so even DeepLabV3-ResNet-101 is counted in a fraction of a second.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.cli import run_stage
from pipeline.core.errors import PipelineError
from pipeline.core.labels import NUM_CLASSES
from pipeline.models.registry import architecture, build, names


def measure(name: str, options: dict, height: int, width: int) -> tuple[int, float]:
    """(parameters, FLOPs of one eval-mode forward pass of a 1×3×height×width batch). On the CPU for a network
    whose construction computes values (SegFormer's stochastic-depth rates): the meta device has none to give."""
    try:
        with torch.device("meta"):
            model = build(name, num_classes=NUM_CLASSES, weights=False, **options).eval()
            image = torch.empty(1, 3, height, width)
    except (RuntimeError, NotImplementedError, PipelineError):  # smp's builder says so in one line
        model = build(name, num_classes=NUM_CLASSES, weights=False, **options).eval()
        image = torch.zeros(1, 3, height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[320, 480], metavar=("HEIGHT", "WIDTH"))
    height, width = parser.parse_args().size
    print(f"| model | variant | parameters | GFLOPs at {height}×{width} |")
    print("|---|---|---:|---:|")
    for name in names():
        for variant, options in architecture(name).variants.items():
            parameters, flops = measure(name, options, height, width)
            print(f"| {name} | {variant} | {parameters / 1e6:.1f} M | {flops / 1e9:.1f} |")
    print()
    print(
        "FLOPs from `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2; convolutions and matrix "
        "products only), batch of one, eval mode. Parameters include the auxiliary head (\"+ aux\"), which only "
        "training runs; `python -m tools.model_summary` prints this table."
    )


if __name__ == "__main__":
    run_stage(main)
