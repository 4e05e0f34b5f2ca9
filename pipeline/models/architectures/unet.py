"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), in the block structure of milesial/Pytorch-UNet.

Two changes from the paper, both as in milesial's version: the 3×3 convolutions use padding 1, so the output
has the input's size (the paper's unpadded ones shrink every map, which needs the overlap-tile strategy and
cropped skip maps), and each convolution is followed by BatchNorm, which the paper does not use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import limits
from pipeline.models.registry import register_model

# Four 2×2 max-pools: every size down the path must halve exactly for the skip maps to line up.
STRIDE = 16


class DoubleConv(nn.Module):
    """(3×3 conv → BatchNorm → ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2×2 max-pool, then DoubleConv: one step down the contracting path."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """×2 upsampling, concatenation with the skip map of the same size, then DoubleConv.

    `bilinear`: parameter-free interpolation, and the DoubleConv halves the channels in its first conv;
    otherwise the paper's learned 2×2 up-convolution halves them."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutConv(nn.Module):
    """1×1 convolution to class scores."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """Four steps down and four up from `width` base channels (64 in the paper).

    Inputs whose sides are not multiples of 16 are zero-padded at the bottom and right (zero is the ImageNet
    mean colour after normalisation) and the logits cropped back to H×W."""

    def __init__(self, num_classes: int, width: int = 64, bilinear: bool = True) -> None:
        super().__init__()
        # With bilinear upsampling the bottom map is not halved by an up-convolution, so it carries half the
        # channels for the concatenations to add up (milesial's `factor`).
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(3, width)
        self.down1 = Down(width, 2 * width)
        self.down2 = Down(2 * width, 4 * width)
        self.down3 = Down(4 * width, 8 * width)
        self.down4 = Down(8 * width, 16 * width // factor)
        self.up1 = Up(16 * width, 8 * width // factor, bilinear)
        self.up2 = Up(8 * width, 4 * width // factor, bilinear)
        self.up3 = Up(4 * width, 2 * width // factor, bilinear)
        self.up4 = Up(2 * width, width, bilinear)
        self.outc = OutConv(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % STRIDE, 0, -height % STRIDE))
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)[..., :height, :width]


@dataclass(frozen=True)
class UNetOptions:
    """`models.<name>.options` of a U-Net: base width (64 in the paper) and how the decoder upsamples."""

    width: int = field(default=64, metadata=limits(1))
    upsampling: Literal["bilinear", "transpose"] = "bilinear"
    pretrained: str = "none"

    def __post_init__(self) -> None:
        if self.pretrained != "none":
            raise PipelineError(f"pretrained: must be none (U-Net has no pretrained backbone; it is trained from "
                                f"scratch), got {self.pretrained!r}")

    @property
    def summary(self) -> str:
        """For run names: `width64-bilinear`."""
        return f"width{self.width}-{self.upsampling}"


@register_model("unet", UNetOptions, backbone=None, variants={
    "bilinear, width 8": {"width": 8},
    "bilinear, width 64": {"width": 64, "upsampling": "bilinear"},
    "transpose, width 64": {"width": 64, "upsampling": "transpose"},
})
def unet(options: UNetOptions, num_classes: int) -> UNet:
    return UNet(num_classes, width=options.width, bilinear=options.upsampling == "bilinear")
