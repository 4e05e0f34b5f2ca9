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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead

from pipeline.models.deeplab import dilated_resnet18, with_atrous_shortcut

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

    def __init__(self, backbone: nn.Module, aspp: nn.Module, decoder: Decoder, aux_classifier: nn.Module | None,
                 backbone_name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = aspp
        self.decoder = decoder
        self.aux_classifier = aux_classifier
        self.backbone_name = backbone_name

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
    return DeepLabV3Plus(features, aspp, Decoder(low_channels, num_classes), aux, backbone)
