"""DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation").

resnet50, resnet101 and mobilenet_v3_large are torchvision's own builders, built with random weights; `build`
then loads the backbone's ImageNet file through `weights.py`, the same file torchvision's `weights_backbone`
would fetch, so that `imagenet` and a local file take one path and fail with one kind of message.

resnet18 is the variant of the repository this project started from: ResNet-18 at output stride 8 under
torchvision's DeepLabHead with ASPP rates 6/12/18.

resnet18 also comes at output stride 16 (`output_stride: 16`), a quarter of the cost of layer3 and layer4 at 8:
the demo's DeepLab, which learns from scratch on a CPU within minutes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, deeplabv3_resnet50, deeplabv3_resnet101
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

TORCHVISION = {
    "resnet50": deeplabv3_resnet50,
    "resnet101": deeplabv3_resnet101,
    "mobilenet_v3_large": deeplabv3_mobilenet_v3_large,
}


class DeepLab(nn.Module):
    """torchvision's DeepLabV3 modules (`backbone`, `classifier`, `aux_classifier`: the same state-dict keys)
    with the project's forward: logits as a Tensor, and {"out", "aux"} only in training with an auxiliary
    head. Unlike torchvision's forward it skips the auxiliary head in eval mode, where nothing uses it."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None, backbone_name: str) -> None:
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
        return DeepLab(features, DeepLabHead(512, num_classes, atrous_rates=(6, 12, 18)), None, backbone)
    net = TORCHVISION[backbone](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
    return DeepLab(net.backbone, net.classifier, net.aux_classifier, backbone)
