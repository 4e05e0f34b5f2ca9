"""The model registry: `build(name, num_classes, **options)` for the architectures fcn, unet and deeplab.

Names are case-insensitive (the original tutorial's CLI says FCN, Unet, Deeplab). Options come straight from
params.yaml `models.<key>.options`; `validate` checks them without building anything, so a stage can call it
before any work starts. Every problem is a `PipelineError` naming the option and what is allowed.

Forward contract of every model: an ImageNet-normalised N×3×H×W float batch of any H, W → N×C×H×W logits.
In training, a model with an auxiliary head (DeepLab with aux_loss) returns {"out": logits, "aux": logits}.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from pipeline.errors import PipelineError
from pipeline.models import weights
from pipeline.models.deeplab import BACKBONES, deeplabv3
from pipeline.models.fcn import FCN8s, FCN32s
from pipeline.models.unet import UNet
from pipeline.voc import NUM_CLASSES

__all__ = ["ARCHITECTURES", "OPTIONS", "architecture", "build", "set_batchnorm_momentum", "validate"]

ARCHITECTURES = ("fcn", "unet", "deeplab")
OPTIONS: dict[str, set[str]] = {
    "fcn": {"variant", "pretrained", "weights_sha256"},
    "unet": {"width", "upsampling", "pretrained"},
    "deeplab": {"backbone", "aux_loss", "pretrained", "weights_sha256"},
}
FCN_VARIANTS = {"fcn32s": FCN32s, "fcn8s": FCN8s}
UNET_UPSAMPLING = ("bilinear", "transpose")


def architecture(name: str) -> str:
    """`name` as a registry key: `FCN`, `Unet` and `Deeplab` are the original tutorial's spellings."""
    key = name.lower() if isinstance(name, str) else name
    if key not in ARCHITECTURES:
        raise PipelineError(f"unknown model {name!r}: must be one of {', '.join(ARCHITECTURES)}")
    return key


def validate(name: str, options: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """Check `options` for architecture `name`; return them complete, with every default filled in.

    `where` prefixes messages (default ``models.<architecture>.options``), e.g.
    ``models.fcn.options.variant: must be one of fcn32s, fcn8s, got 'x'``. A local weights file is checked
    for existence and a sha256 here; its content is checked when it is loaded."""
    arch = architecture(name)
    where = where or f"models.{arch}.options"
    if not isinstance(options, dict):
        raise PipelineError(f"{where}: must be a mapping of option: value, got {options!r}")
    unknown = sorted(str(key) for key in set(options) - OPTIONS[arch])
    if unknown:
        raise PipelineError(f"{where}.{unknown[0]}: unknown option for {arch}; allowed: {', '.join(sorted(OPTIONS[arch]))}")
    if arch == "fcn":
        return {"variant": _one_of(options, "variant", tuple(FCN_VARIANTS), "fcn32s", where), **_weights(options, where)}
    if arch == "unet":
        return _unet_options(options, where)
    return _deeplab_options(options, where)


def build(name: str, num_classes: int = NUM_CLASSES, *, where: str | None = None, **options: Any) -> nn.Module:
    """The model `name` with `options` (see `OPTIONS`), its backbone's pretrained weights loaded if asked for."""
    arch = architecture(name)
    where = where or f"models.{arch}.options"
    resolved = validate(arch, options, where)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise PipelineError(f"num_classes: must be a positive integer, got {num_classes!r}")
    if arch == "unet":
        return UNet(num_classes, width=resolved["width"], bilinear=resolved["upsampling"] == "bilinear")
    if arch == "fcn":
        model = FCN_VARIANTS[resolved["variant"]](num_classes)
    else:
        model = deeplabv3(resolved["backbone"], num_classes, resolved["aux_loss"])
    weights.load_backbone(model.backbone, model.backbone_name, resolved["pretrained"], resolved["weights_sha256"], where)
    return model


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm layer; returns how many were changed.

    torchvision's MobileNetV3 uses 0.01 (from its long ImageNet recipe), so on short runs the running
    statistics that eval mode uses lag far behind the weights; PyTorch's default is 0.1."""
    layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def _unet_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    width = options.get("width", 64)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise PipelineError(f"{where}.width: must be a positive integer (base channels, 64 in the paper), got {width!r}")
    pretrained = options.get("pretrained", "none")
    if pretrained != "none":
        raise PipelineError(
            f"{where}.pretrained: must be none (U-Net has no pretrained backbone; it is trained from scratch), "
            f"got {pretrained!r}"
        )
    upsampling = _one_of(options, "upsampling", UNET_UPSAMPLING, "bilinear", where)
    return {"width": width, "upsampling": upsampling, "pretrained": "none"}


def _deeplab_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    backbone = _one_of(options, "backbone", BACKBONES, "resnet50", where)
    # torchvision's segmentation reference trains all three of its DeepLabV3 models with --aux-loss (weight
    # 0.5 on a head over layer3, or over the stride-8 block of MobileNetV3); the resnet18 variant has no head.
    aux_loss = options.get("aux_loss", backbone != "resnet18")
    if not isinstance(aux_loss, bool):
        raise PipelineError(f"{where}.aux_loss: must be true or false, got {aux_loss!r}")
    if aux_loss and backbone == "resnet18":
        raise PipelineError(f"{where}.aux_loss: backbone resnet18 has no auxiliary head; set aux_loss: false or remove it")
    return {"backbone": backbone, "aux_loss": aux_loss, **_weights(options, where)}


def _weights(options: dict[str, Any], where: str) -> dict[str, Any]:
    pretrained = options.get("pretrained", "none")
    if not isinstance(pretrained, str) or not pretrained:
        raise PipelineError(f"{where}.pretrained: must be imagenet, none or the path of a weights file, got {pretrained!r}")
    sha256 = options.get("weights_sha256")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise PipelineError(f"{where}.weights_sha256: must be 64 hexadecimal digits, got {sha256!r}")
    weights.check_source(pretrained, sha256, where)
    return {"pretrained": pretrained, "weights_sha256": sha256}


def _one_of(options: dict[str, Any], key: str, allowed: tuple[str, ...], default: str, where: str) -> str:
    value = options.get(key, default)
    if value not in allowed:
        raise PipelineError(f"{where}.{key}: must be one of {', '.join(allowed)}, got {value!r}")
    return value
