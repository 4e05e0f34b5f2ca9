"""DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation"): DeepLabV3's encoder (a dilated ResNet and ASPP) plus the paper's decoder, which fuses the
stride-4 features of the backbone's first stage.

The decoder, as in §3.1 and Table 1–2 of the paper: a 1×1 convolution projects the stride-4 features to 48
channels, ASPP's output is upsampled bilinearly to their size and concatenated, two 3×3 convolutions of 256
channels fuse them, a 1×1 convolution scores the classes, and a bilinear ×4 brings the scores to the input's size.
The paper's separable convolutions belong to its Xception backbone; with ResNets the decoder's convolutions are
plain, as in mmsegmentation's and DeepLabV3Plus-Pytorch's ResNet variants, which keep ASPP plain too.

Backbones: torchvision's resnet50 and resnet101 (Bottleneck blocks, dilated with `replace_stride_with_dilation`)
and resnet18 (dilated by hand, as for DeepLabV3), at output stride 16 (ASPP rates 6/12/18, the paper's training
setting) or 8 (12/24/36). The optional auxiliary head is torchvision's FCNHead on layer3, as mmsegmentation's
VOC recipe has it. State-dict keys of the backbone are torchvision's, so ImageNet weights load as for DeepLabV3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead

from pipeline.models import weights
from pipeline.models.layers import dilated_resnet18, with_atrous_shortcut
from pipeline.models.registry import register_model

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
# Which of layer2, layer3, layer4 dilate instead of striding, per output stride (torchvision's argument).
DILATED_LAYERS = {16: [False, False, True], 8: [False, True, True]}
TORCHVISION_RESNETS = {"resnet50": resnet50, "resnet101": resnet101}
DECODER_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Stride-4 features and ASPP's output → class scores at stride 4."""

    def __init__(self, low_level_channels: int, num_classes: int) -> None:
        super().__init__()
        self.project = _conv_bn_relu(low_level_channels, LOW_LEVEL_CHANNELS, 1)
        self.fuse = nn.Sequential(_conv_bn_relu(DECODER_CHANNELS + LOW_LEVEL_CHANNELS, DECODER_CHANNELS, 3),
                                  _conv_bn_relu(DECODER_CHANNELS, DECODER_CHANNELS, 3))
        self.classify = nn.Conv2d(DECODER_CHANNELS, num_classes, 1)

    def forward(self, low_level: Tensor, encoded: Tensor) -> Tensor:
        low_level = self.project(low_level)
        encoded = F.interpolate(encoded, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classify(self.fuse(torch.cat([encoded, low_level], dim=1)))


class DeepLabV3Plus(nn.Module):
    """The project's forward contract: logits at the input's size as a Tensor, and {"out", "aux"} only in
    training with an auxiliary head."""

    def __init__(self, backbone: nn.Module, aspp: nn.Module, decoder: Decoder, aux_classifier: nn.Module | None
                 ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = aspp
        self.decoder = decoder
        self.aux_classifier = aux_classifier

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        scores = self.decoder(features["low"], self.aspp(features["out"]))
        out = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        if not (self.training and self.aux_classifier is not None):
            return out
        aux = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


def _resnet(backbone: str, output_stride: int) -> ResNet:
    if backbone == "resnet18":
        return dilated_resnet18(output_stride)
    return TORCHVISION_RESNETS[backbone](weights=None, replace_stride_with_dilation=DILATED_LAYERS[output_stride])


def deeplabv3plus(backbone: str, num_classes: int, aux_loss: bool, output_stride: int = 16) -> DeepLabV3Plus:
    net = _resnet(backbone, output_stride)
    low_channels, aux_channels, high_channels = (net.layer1[-1].conv1.in_channels, net.layer3[-1].conv1.in_channels,
                                                 net.layer4[-1].conv1.in_channels)
    layers = {"layer1": "low", "layer4": "out"} | ({"layer3": "aux"} if aux_loss else {})
    features = IntermediateLayerGetter(net, return_layers=layers)
    aspp = with_atrous_shortcut(ASPP(high_channels, ASPP_RATES[output_stride], DECODER_CHANNELS))
    aux = FCNHead(aux_channels, num_classes) if aux_loss else None
    return DeepLabV3Plus(features, aspp, Decoder(low_channels, num_classes), aux)


@dataclass(frozen=True)
class DeepLabV3PlusOptions:
    """`models.<name>.options` of a DeepLabV3+: a dilated ResNet, ASPP and the stride-4 decoder. `aux_loss` (an
    FCN head on layer3, weight 0.4) defaults to on for resnet50 and resnet101, as in mmsegmentation's recipe."""

    backbone: Literal["resnet50", "resnet101", "resnet18"] = "resnet50"
    output_stride: Literal[8, 16] = 16
    aux_loss: bool | None = None
    pretrained: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.aux_loss is None:
            object.__setattr__(self, "aux_loss", self.backbone != "resnet18")
        weights.check_source(self.pretrained, self.weights_sha256)

    @property
    def summary(self) -> str:
        """For run names: `resnet50-os16`."""
        return f"{self.backbone}-os{self.output_stride}"


def load_backbone_weights(model: DeepLabV3Plus, options: DeepLabV3PlusOptions, where: str) -> None:
    weights.load_backbone(model.backbone, options.backbone, options.pretrained, options.weights_sha256, where)


@register_model("deeplabv3plus", DeepLabV3PlusOptions, load_weights=load_backbone_weights, variants={
    "resnet18, output stride 16": {"backbone": "resnet18"},
    "resnet50 + aux, output stride 16": {"backbone": "resnet50"},
    "resnet50 + aux, output stride 8": {"backbone": "resnet50", "output_stride": 8},
    "resnet101 + aux, output stride 16": {"backbone": "resnet101"},
})
def build_deeplabv3plus(options: DeepLabV3PlusOptions, num_classes: int) -> DeepLabV3Plus:
    return deeplabv3plus(options.backbone, num_classes, options.aux_loss, options.output_stride)
