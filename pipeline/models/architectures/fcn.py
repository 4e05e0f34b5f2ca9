"""Fully convolutional networks (Long, Shelhamer & Darrell, CVPR 2015) on ResNet backbones.

`FCN32s` is the network of the d2l.ai FCN chapter (https://d2l.ai/chapter_computer-vision/fcn.html) this project
started from; `FCN8s` adds the paper's 1/16 and 1/8 skip connections on a ResNet-34.

Inputs of any size: the backbone rounds every stride-2 step up, so its 1/s map has ceil(H/s) rows, and an
×f transposed convolution with kernel 2f, stride f and padding f/2 gives exactly f times its input. Upsampled
maps therefore cover the input (or the finer map) plus at most one cell at the bottom and right, which is
cropped off; no padding of the input is needed. Those transposed convolutions are `BlockConvTranspose2d`s: the same
parameters, computed as one matrix product while training on the CPU (see there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18, resnet34
from torchvision.models._utils import IntermediateLayerGetter

from pipeline.models import weights
from pipeline.models.registry import register_model


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """d2l's `bilinear_kernel`: per channel, the separable tent filter of bilinear interpolation; no mixing
    across channels. Weight layout of ConvTranspose2d: in × out × k × k."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - torch.abs(torch.arange(kernel_size, dtype=torch.float32) - center) / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


class BlockConvTranspose2d(nn.ConvTranspose2d):
    """A ×f transposed convolution with kernel 2f, stride f and padding f/2 (f even) that, while training on the
    CPU, is computed as one matrix product instead of PyTorch's column buffer and scatter.

    With the kernel twice the stride, the output splits into f×f blocks (offset by f/2) that each sum the 2×2
    input pixels around them, each pixel through one quarter of the kernel. So the input's 2×2 neighbourhoods
    (zero beyond the border) times the kernel's quarters, rearranged into one (4 · in) × (out · f · f) matrix,
    give every block at once. Outputs and gradients equal the transposed convolution's but for rounding; the
    parameters and state-dict keys are ConvTranspose2d's. Without autograd (predicting) oneDNN's transposed
    convolution is the faster one and is kept, and GPUs keep cuDNN's (docs/performance.md)."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        if factor < 2 or factor % 2:
            raise ValueError(f"the upsampling factor must be even, got {factor}")
        super().__init__(in_channels, out_channels, kernel_size=2 * factor, stride=factor, padding=factor // 2)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.device.type != "cpu" or output_size is not None or not torch.is_grad_enabled():
            return super().forward(x, output_size)
        batch, channels, height, width = x.shape
        factor, out_channels = self.stride[0], self.out_channels
        # (batch · (height + 1) · (width + 1)) × (channels · 2 · 2): every 2×2 neighbourhood of the zero-bordered input
        neighbourhoods = F.pad(x, (1, 1, 1, 1)).unfold(2, 2, 1).unfold(3, 2, 1)
        rows = neighbourhoods.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * 4)
        # The neighbour at (di, dj) reaches its block through the kernel's quarter (1 - di, 1 - dj).
        quarters = self.weight.unflatten(2, (2, factor)).unflatten(4, (2, factor)).flip(2, 4)
        kernel = quarters.permute(0, 2, 4, 1, 3, 5).reshape(channels * 4, out_channels * factor * factor)
        blocks = (rows @ kernel).view(batch, height + 1, width + 1, out_channels, factor, factor)
        full = blocks.permute(0, 3, 1, 4, 2, 5).reshape(batch, out_channels, (height + 1) * factor,
                                                         (width + 1) * factor)
        half = factor // 2
        out = full[..., half:half + height * factor, half:half + width * factor]
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def bilinear_upsampling(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable ×`factor` upsampling that starts as bilinear interpolation (Long et al., §3.3)."""
    layer = BlockConvTranspose2d(channels, channels, factor)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
        layer.bias.zero_()
    return layer


class FCN32s(nn.Module):
    """ResNet-18 without avgpool and fc, a 1×1 class scorer, one ×32 transposed convolution."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = IntermediateLayerGetter(resnet18(), return_layers={"layer4": "out"})
        self.score = nn.Conv2d(512, num_classes, kernel_size=1)
        self.upsample = bilinear_upsampling(num_classes, 32)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        return self.upsample(self.score(self.backbone(x)["out"]))[..., :height, :width]


class FCN8s(nn.Module):
    """ResNet-34 scored at 1/32, 1/16 (layer3) and 1/8 (layer2); each coarser score map is upsampled ×2 and
    added to the next finer one, and the 1/8 sum is upsampled ×8 (the FCN-8s fusion of Long et al., Fig. 3)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = IntermediateLayerGetter(resnet34(),
                                                return_layers={"layer2": "s8", "layer3": "s16", "layer4": "s32"})
        self.score32 = nn.Conv2d(512, num_classes, kernel_size=1)
        # The skip scorers keep PyTorch's default init, not the paper's zeros: those belong to its staged
        # training (FCN-32s, then 16s, then 8s); here all of them are trained at once.
        self.score16 = nn.Conv2d(256, num_classes, kernel_size=1)
        self.score8 = nn.Conv2d(128, num_classes, kernel_size=1)
        self.up32 = bilinear_upsampling(num_classes, 2)
        self.up16 = bilinear_upsampling(num_classes, 2)
        self.up8 = bilinear_upsampling(num_classes, 8)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        features = self.backbone(x)
        score16 = self.score16(features["s16"])
        score8 = self.score8(features["s8"])
        fused16 = _crop_like(self.up32(self.score32(features["s32"])), score16) + score16
        fused8 = _crop_like(self.up16(fused16), score8) + score8
        return self.up8(fused8)[..., :height, :width]


def _crop_like(x: Tensor, reference: Tensor) -> Tensor:
    return x[..., : reference.shape[-2], : reference.shape[-1]]


@dataclass(frozen=True)
class FCNOptions:
    """`models.<name>.options` of an FCN: fcn32s (d2l's ResNet-18) or fcn8s (ResNet-34 with the paper's skips)."""

    variant: Literal["fcn32s", "fcn8s"] = "fcn32s"
    pretrained: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        weights.check_source(self.pretrained, self.weights_sha256)

    @property
    def summary(self) -> str:
        """What tells this network apart from other FCNs, for run names: `fcn32s`."""
        return self.variant


VARIANTS = {"fcn32s": (FCN32s, "resnet18"), "fcn8s": (FCN8s, "resnet34")}  # the network and its backbone


def load_backbone_weights(model: nn.Module, options: FCNOptions, where: str) -> None:
    backbone = VARIANTS[options.variant][1]
    weights.load_backbone(model.backbone, backbone, options.pretrained, options.weights_sha256, where)


@register_model("fcn", FCNOptions, load_weights=load_backbone_weights,
                variants={"fcn32s": {"variant": "fcn32s"}, "fcn8s": {"variant": "fcn8s"}})
def fcn(options: FCNOptions, num_classes: int) -> nn.Module:
    return VARIANTS[options.variant][0](num_classes)
