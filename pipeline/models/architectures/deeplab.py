"""DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation").

resnet50, resnet101 and mobilenet_v3_large are torchvision's own builders, built with random weights; the registry
then loads the backbone's ImageNet file through `weights.py`, the same file torchvision's `weights_backbone`
would fetch, so that `imagenet` and a local file take one path and fail with one kind of message.

resnet18 is the variant of the repository this project started from: ResNet-18 at output stride 8 under
torchvision's DeepLabHead with ASPP rates 6/12/18.

resnet18 also comes at output stride 16 (`output_stride: 16`), a quarter of the cost of layer3 and layer4 at 8:
the demo's DeepLab, which learns from scratch on a CPU within minutes.

Every head's atrous 3×3 convolutions are `pipeline.models.layers.AtrousConv2d`s: the same parameters, computing
only the taps that can land on the feature map (see there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import (
    DeepLabV3_MobileNet_V3_Large_Weights,
    DeepLabV3_ResNet50_Weights,
    DeepLabV3_ResNet101_Weights,
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet50,
    deeplabv3_resnet101,
)
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from pipeline.core.errors import PipelineError
from pipeline.models import weights
from pipeline.models.layers import dilated_resnet18, with_atrous_shortcut
from pipeline.models.registry import register_model

TORCHVISION = {
    "resnet50": deeplabv3_resnet50,
    "resnet101": deeplabv3_resnet101,
    "mobilenet_v3_large": deeplabv3_mobilenet_v3_large,
}
# Whole-model weights (`init: {from: torchvision}`): mIoU on COCO val2017 with VOC's labels, 66.4 / 67.4 / 60.3
# (torchvision's model table; not comparable with VOC val numbers).
COCO_WITH_VOC_LABELS = {
    "resnet50": DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    "resnet101": DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
    "mobilenet_v3_large": DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
}


class DeepLab(nn.Module):
    """torchvision's DeepLabV3 modules (`backbone`, `classifier`, `aux_classifier`: the same state-dict keys)
    with the project's forward: logits as a Tensor, and {"out", "aux"} only in training with an auxiliary
    head. Unlike torchvision's forward it skips the auxiliary head in eval mode, where nothing uses it."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)
        if not (self.training and self.aux_classifier is not None):
            return out
        aux = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


@dataclass(frozen=True)
class DeepLabOptions:
    """`models.<name>.options` of a DeepLabV3. `aux_loss` defaults to on, except for resnet18, which has no head:
    torchvision's segmentation reference trains its three DeepLabV3 models with the auxiliary loss.
    `output_stride` is resnet18's alone (8 unless set); torchvision builds the others at a fixed stride."""

    backbone: Literal["resnet50", "resnet101", "mobilenet_v3_large", "resnet18"] = "resnet50"
    aux_loss: bool | None = None
    output_stride: Literal[8, 16] | None = field(default=None, metadata={"doc": "resnet18 only: 8 or 16"})
    pretrained: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.aux_loss is None:
            object.__setattr__(self, "aux_loss", self.backbone != "resnet18")
        if self.output_stride is not None and self.backbone != "resnet18":
            raise PipelineError(f"output_stride: only the resnet18 backbone takes it (torchvision builds "
                                f"{self.backbone} at a fixed stride); remove it")
        if self.backbone == "resnet18" and self.output_stride is None:
            object.__setattr__(self, "output_stride", 8)
        if self.aux_loss and self.backbone == "resnet18":
            raise PipelineError("aux_loss: backbone resnet18 has no auxiliary head; set aux_loss: false or remove it")
        weights.check_source(self.pretrained, self.weights_sha256)

    @property
    def summary(self) -> str:
        """For run names: `resnet50`, `resnet18-os16`."""
        return self.backbone + (f"-os{self.output_stride}" if self.output_stride else "")


def load_backbone_weights(model: DeepLab, options: DeepLabOptions, where: str) -> None:
    weights.load_backbone(model.backbone, options.backbone, options.pretrained, options.weights_sha256, where)


def coco_with_voc_labels(options: DeepLabOptions):
    """torchvision's DeepLabV3 trained on COCO with VOC's 21 classes, for the backbones it ships."""
    return COCO_WITH_VOC_LABELS.get(options.backbone)


@register_model("deeplab", DeepLabOptions, load_weights=load_backbone_weights,
                torchvision_weights=coco_with_voc_labels, variants={
                    "resnet18": {"backbone": "resnet18"},
                    "resnet18, output stride 16": {"backbone": "resnet18", "output_stride": 16},
                    "mobilenet_v3_large + aux": {"backbone": "mobilenet_v3_large"},
                    "resnet50 + aux": {"backbone": "resnet50"},
                    "resnet101 + aux": {"backbone": "resnet101"},
                })
def deeplab(options: DeepLabOptions, num_classes: int) -> DeepLab:
    return deeplabv3(options.backbone, num_classes, options.aux_loss, options.output_stride)


def deeplabv3(backbone: str, num_classes: int, aux_loss: bool, output_stride: int | None = None) -> DeepLab:
    if backbone == "resnet18":
        features = IntermediateLayerGetter(dilated_resnet18(output_stride), return_layers={"layer4": "out"})
        head = DeepLabHead(512, num_classes, atrous_rates=(6, 12, 18))
        return DeepLab(features, with_atrous_shortcut(head), None)
    net = TORCHVISION[backbone](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
    return DeepLab(net.backbone, with_atrous_shortcut(net.classifier), net.aux_classifier)
