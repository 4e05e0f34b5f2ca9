"""The model registry: `build(architecture, options)` for fcn, unet, deeplab (V3) and deeplabv3plus.

Options are the typed `pipeline.core.params` objects (`FCNOptions`, `UNetOptions`, `DeepLabOptions`,
`DeepLabV3PlusOptions`), checked when
params.yaml is loaded; `build("unet", width=4)` also takes plain keyword options and checks them the same way.
Names are case-insensitive (the original tutorial's CLI says FCN, Unet, Deeplab).

Forward contract of every model: an ImageNet-normalised N×3×H×W float batch of any H, W → N×C×H×W logits.
In training, a model with an auxiliary head (DeepLab or DeepLabV3+ with aux_loss) returns {"out": logits,
"aux": logits}.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from pipeline.core.errors import PipelineError
from pipeline.core.labels import NUM_CLASSES
from pipeline.core.params import (
    DeepLabOptions,
    DeepLabV3PlusOptions,
    FCNOptions,
    ModelOptions,
    UNetOptions,
    model_options,
)
from pipeline.models import weights
from pipeline.models.deeplab import deeplabv3
from pipeline.models.deeplabv3plus import deeplabv3plus
from pipeline.models.fcn import FCN8s, FCN32s
from pipeline.models.unet import UNet

__all__ = ["build", "set_batchnorm_momentum", "zero_init_residual"]

FCN_VARIANTS = {"fcn32s": FCN32s, "fcn8s": FCN8s}


def build(architecture: str, options: ModelOptions | None = None, *, num_classes: int = NUM_CLASSES,
          where: str | None = None, **raw_options: Any) -> nn.Module:
    """The network `architecture` with `options` (or `raw_options`, checked like params.yaml's), its backbone's
    pretrained weights loaded if asked for. `where` prefixes messages (default ``models.<architecture>.options``)."""
    where = where or f"models.{str(architecture).lower()}.options"
    if options is None:
        options = model_options(architecture, raw_options, where)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise PipelineError(f"num_classes: must be a positive integer, got {num_classes!r}")
    if isinstance(options, UNetOptions):
        return UNet(num_classes, width=options.width, bilinear=options.upsampling == "bilinear")
    if isinstance(options, FCNOptions):
        model = FCN_VARIANTS[options.variant](num_classes)
    elif isinstance(options, DeepLabOptions):
        model = deeplabv3(options.backbone, num_classes, options.aux_loss, options.output_stride)
    elif isinstance(options, DeepLabV3PlusOptions):
        model = deeplabv3plus(options.backbone, num_classes, options.aux_loss, options.output_stride)
    else:
        raise TypeError(f"not model options: {options!r}")
    zero_init_residual(model)
    weights.load_backbone(model.backbone, model.backbone_name, options.pretrained, options.weights_sha256, where)
    return model


def zero_init_residual(model: nn.Module) -> int:
    """Zero the scale of the last BatchNorm in every ResNet block of `model`, so that each block starts as its
    shortcut (the identity where it keeps the shape): torchvision's `zero_init_residual` (Goyal et al. 2017, §5.1),
    applied to every network `build` makes, torchvision's DeepLab builders included, which do not pass it on.
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
