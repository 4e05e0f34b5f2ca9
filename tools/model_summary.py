"""Print a markdown table of every model variant: parameters and GFLOPs of one 320×480 image (for the README).

Not a DVC stage: nothing is trained or read. The models are built on PyTorch's meta device, which tracks shapes
without allocating or computing, so even DeepLabV3-ResNet-101 is counted in a fraction of a second.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.cli import run_stage
from pipeline.models import build

VARIANTS = [
    ("fcn", "fcn32s", {"variant": "fcn32s"}),
    ("fcn", "fcn8s", {"variant": "fcn8s"}),
    ("unet", "bilinear, width 64", {"width": 64, "upsampling": "bilinear"}),
    ("unet", "transpose, width 64", {"width": 64, "upsampling": "transpose"}),
    ("deeplab", "resnet18", {"backbone": "resnet18"}),
    ("deeplab", "resnet18, output stride 16", {"backbone": "resnet18", "output_stride": 16}),
    ("deeplab", "mobilenet_v3_large + aux", {"backbone": "mobilenet_v3_large"}),
    ("deeplab", "resnet50 + aux", {"backbone": "resnet50"}),
    ("deeplab", "resnet101 + aux", {"backbone": "resnet101"}),
    ("deeplabv3plus", "resnet18, output stride 16", {"backbone": "resnet18"}),
    ("deeplabv3plus", "resnet50 + aux, output stride 16", {"backbone": "resnet50"}),
    ("deeplabv3plus", "resnet50 + aux, output stride 8", {"backbone": "resnet50", "output_stride": 8}),
    ("deeplabv3plus", "resnet101 + aux, output stride 16", {"backbone": "resnet101"}),
]


def measure(name: str, options: dict, height: int, width: int) -> tuple[int, float]:
    """(parameters, FLOPs of one eval-mode forward pass of a 1×3×height×width batch)."""
    with torch.device("meta"):
        model = build(name, **options).eval()
        image = torch.empty(1, 3, height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[320, 480], metavar=("HEIGHT", "WIDTH"))
    height, width = parser.parse_args().size
    print(f"| model | variant | parameters | GFLOPs at {height}×{width} |")
    print("|---|---|---:|---:|")
    for name, variant, options in VARIANTS:
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
