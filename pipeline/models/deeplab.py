"""DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation").

resnet50, resnet101 and mobilenet_v3_large are torchvision's own builders, built with random weights; `build`
then loads the backbone's ImageNet file through `weights.py`, the same file torchvision's `weights_backbone`
would fetch, so that `imagenet` and a local file take one path and fail with one kind of message.

resnet18 is the variant of the repository this project started from: ResNet-18 at output stride 8 under
torchvision's DeepLabHead with ASPP rates 6/12/18.

resnet18 also comes at output stride 16 (`output_stride: 16`), a quarter of the cost of layer3 and layer4 at 8:
the demo's DeepLab, which learns from scratch on a CPU within minutes.

Every head's atrous 3×3 convolutions are `AtrousConv2d`s: the same parameters, computing only the taps that can
land on the feature map (see there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, deeplabv3_resnet50, deeplabv3_resnet101
from torchvision.models.segmentation.deeplabv3 import ASPPConv, DeepLabHead

TORCHVISION = {
    "resnet50": deeplabv3_resnet50,
    "resnet101": deeplabv3_resnet101,
    "mobilenet_v3_large": deeplabv3_mobilenet_v3_large,
}


class DeepLab(nn.Module):
    """torchvision's DeepLabV3 modules (`backbone`, `classifier`, `aux_classifier`: the same state-dict keys)
    with the project's forward: logits as a Tensor, and {"out", "aux"} only in training with an auxiliary
    head. Unlike torchvision's forward it skips the auxiliary head in eval mode, where nothing uses it."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None,
                 backbone_name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.backbone_name = backbone_name

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)
        if not (self.training and self.aux_classifier is not None):
            return out
        aux = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


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


def deeplabv3(backbone: str, num_classes: int, aux_loss: bool, output_stride: int | None = None) -> DeepLab:
    if backbone == "resnet18":
        features = IntermediateLayerGetter(dilated_resnet18(output_stride), return_layers={"layer4": "out"})
        head = DeepLabHead(512, num_classes, atrous_rates=(6, 12, 18))
        return DeepLab(features, with_atrous_shortcut(head), None, backbone)
    net = TORCHVISION[backbone](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
    return DeepLab(net.backbone, with_atrous_shortcut(net.classifier), net.aux_classifier, backbone)
