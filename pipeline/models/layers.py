"""Layers and initialisation shared by several architectures: the atrous convolution that skips the taps outside
the map, ResNet-18 dilated by hand, and the initialisations `pipeline.models.registry.build` and the training loop
apply to any network. An edit here retrains every model; code of one architecture belongs in its own module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.segmentation.deeplabv3 import ASPPConv


class AtrousConv2d(nn.Conv2d):
    """A 3×3 convolution dilated by d and zero-padded by d that skips the taps outside the feature map.

    Along an axis where d is at least the map's size, both outer taps of every output fall into the padding, so
    only the centre row (or column) of the kernel sees data: the filter "degenerates to a 1×1 filter" (Chen et al.
    2017, §3.3). The outer taps then add exact zeros, and their gradients are exactly zero too, so skipping them
    changes nothing but the rounding, and the cost: ASPP's rates 6/12/18 reach past the demo's 6×6 maps, and
    MobileNetV3's rate 36 past a 480 crop's 30×30 map. Larger maps take the full convolution, and so does an
    exported graph (ONNX): it must hold for every input size, not only the example's."""

    def __init__(self, conv: nn.Conv2d) -> None:
        if (conv.kernel_size != (3, 3) or conv.padding != conv.dilation or conv.stride != (1, 1) or conv.groups != 1
                or conv.padding_mode != "zeros"):
            raise ValueError(f"not an atrous 3×3 convolution zero-padded by its dilation: {conv}")
        # On the meta device, so that building it draws nothing from the random generator: `conv`'s parameters
        # replace its own.
        super().__init__(conv.in_channels, conv.out_channels, 3, padding=conv.padding, dilation=conv.dilation,
                         bias=conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        height, width = input.shape[-2:]
        outside_rows, outside_columns = self.dilation[0] >= height, self.dilation[1] >= width
        if torch.compiler.is_exporting() or not (outside_rows or outside_columns):
            return super()._conv_forward(input, weight, bias)
        if outside_rows:
            weight = weight[:, :, 1:2]
        if outside_columns:
            weight = weight[:, :, :, 1:2]
        padding = (0 if outside_rows else self.padding[0], 0 if outside_columns else self.padding[1])
        return F.conv2d(input, weight, bias, self.stride, padding, self.dilation)


def with_atrous_shortcut(head: nn.Module) -> nn.Module:
    """`head` with the convolution of each of its ASPP branches replaced by an `AtrousConv2d` on the same
    parameters (the state-dict keys stay torchvision's)."""
    for branch in head.modules():
        if isinstance(branch, ASPPConv):
            branch[0] = AtrousConv2d(branch[0])
    return head


# Output stride → the dilation of each ResNet-18 layer that keeps its input resolution instead of striding.
RESNET18_DILATIONS = {8: {"layer3": 2, "layer4": 4}, 16: {"layer4": 2}}


def dilated_resnet18(output_stride: int) -> ResNet:
    """ResNet-18 at output stride 8 (layer3 and layer4 keep their input resolution and dilate their 3×3
    convolutions by 2 and 4 instead, Chen et al. §3.1, so the receptive field grows as with the strides) or 16
    (only layer4, dilated by 2: a quarter of the cost of layer3 and layer4 at stride 8).

    Done by hand because torchvision's BasicBlock refuses `replace_stride_with_dilation`. Every 3×3 conv of a
    layer gets the layer's dilation; torchvision's Bottleneck version keeps the previous dilation in the first
    block of each layer, a difference that leaves the parameter shapes (and so ImageNet weights) unchanged."""
    net = resnet18()
    for name, dilation in RESNET18_DILATIONS[output_stride].items():
        for block in getattr(net, name):
            for conv in (block.conv1, block.conv2):
                conv.stride, conv.dilation, conv.padding = (1, 1), (dilation, dilation), (dilation, dilation)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return net


def zero_init_residual(model: nn.Module) -> int:
    """Zero the scale of the last BatchNorm in every ResNet block of `model`, so that each block starts as its
    shortcut (the identity where it keeps the shape): torchvision's `zero_init_residual` (Goyal et al. 2017, §5.1),
    applied to every network the registry builds, torchvision's DeepLab builders included, which do not pass it on.
    Pretrained weights replace it; from scratch it is what lets a ResNet learn within the demo's minutes. Returns
    how many blocks it set."""
    blocks = 0
    for module in model.modules():
        norm = module.bn3 if isinstance(module, Bottleneck) else module.bn2 if isinstance(module, BasicBlock) else None
        if norm is not None and norm.weight is not None:
            nn.init.zeros_(norm.weight)
            blocks += 1
    return blocks


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm layer; returns how many were changed.

    torchvision's MobileNetV3 uses 0.01 (from its long ImageNet recipe), so on short runs the running
    statistics that eval mode uses lag far behind the weights; PyTorch's default is 0.1."""
    layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)
