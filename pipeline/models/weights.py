"""Backbone weights: torchvision's ImageNet files (through the torch hub cache) or a local file pinned by sha256.

This is the only file of `pipeline.models` that reads from disk or the network; the networks themselves are
built with random weights and receive their backbone's state dict here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
)

from pipeline.core.errors import PipelineError

# IMAGENET1K_V1 throughout: the weights torchvision's own segmentation builders default to.
IMAGENET: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": ResNet101_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}

# Where each classification network keeps its feature extractor (a key prefix the backbone module lacks) and
# its ImageNet classifier (keys dropped) in the state dict; ResNets are ("", "fc.").
_LAYOUT = {"mobilenet_v3_large": ("features.", "classifier.")}


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def hub_path(weights: WeightsEnum) -> Path:
    """Where `torch.hub.load_state_dict_from_url` looks for (and downloads) `weights`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def check_source(pretrained: str, weights_sha256: str | None) -> None:
    """The options' own check, when params.yaml is read: `pretrained` is imagenet, none or a local file, which
    must come with its sha256 (checked, with the file's existence, when it is loaded)."""
    if pretrained in ("imagenet", "none"):
        if weights_sha256 is not None:
            raise PipelineError(f"weights_sha256: only used with a local weights file, not with pretrained: "
                                f"{pretrained}; remove it")
    elif weights_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", weights_sha256):
        raise PipelineError(f"weights_sha256: must be 64 hexadecimal digits, got {weights_sha256!r}")


def _check_local(pretrained: str, sha256: str | None, where: str) -> None:
    """The checks that need no download or hashing of a good file: a local path exists and comes with a sha256
    (`check_source` checks the values themselves)."""
    if pretrained in ("imagenet", "none"):
        return
    path = Path(pretrained)
    if not path.is_file():
        raise PipelineError(f"{where}.pretrained: weights file {path} not found; use imagenet or none, or fix the path")
    if sha256 is None:
        raise PipelineError(
            f"{where}.weights_sha256: required with a local weights file; "
            f"add weights_sha256: {file_sha256(path)} (the sha256 of {path} now)"
        )


def load_backbone(backbone: nn.Module, name: str, pretrained: str, sha256: str | None, where: str) -> None:
    """Load ImageNet weights of torchvision's `name` classifier into `backbone` (its feature extractor).

    Strict for every backbone key; the classifier's keys (`fc.*`, `classifier.*`) are ignored."""
    _check_local(pretrained, sha256, where)
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        source, state = str(hub_path(IMAGENET[name])), _download(name, where)
    else:
        source, state = pretrained, _read_local(Path(pretrained), sha256, where)
    if not isinstance(state, dict):
        raise PipelineError(f"{where}.pretrained: {source} holds a {type(state).__name__}, "
                            f"not a state dict of torchvision's {name}")
    prefix, classifier = _LAYOUT.get(name, ("", "fc."))
    kept = {key.removeprefix(prefix): value for key, value in state.items() if not key.startswith(classifier)}
    try:
        missing, unexpected = backbone.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape: weights of another network
        raise PipelineError(f"{where}.pretrained: {source} does not fit torchvision's {name}: "
                            f"{_first_line(error)}") from None
    if missing or unexpected:
        raise PipelineError(
            f"{where}.pretrained: {source} is not a state dict of torchvision's {name}: "
            f"{len(missing)} keys missing ({', '.join(missing[:3])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"
        )


def _download(name: str, where: str) -> dict:
    weights = IMAGENET[name]
    cached = hub_path(weights)
    was_cached = cached.is_file()
    try:
        return torch.hub.load_state_dict_from_url(weights.url, check_hash=True, map_location="cpu", weights_only=True)
    # URLError, socket timeouts, SSL and connection errors are OSErrors; a truncated HTTP body is an
    # HTTPException; a download with the wrong hash prefix is a RuntimeError.
    except (OSError, RuntimeError, http.client.HTTPException, pickle.UnpicklingError, EOFError) as error:
        if was_cached:
            raise PipelineError(
                f"{where}.pretrained: cached weights {cached} cannot be read ({_first_line(error)}); "
                "delete the file so it is downloaded again"
            ) from None
        raise PipelineError(
            f"{where}.pretrained: imagenet weights for {name} could not be downloaded ({_first_line(error)}); "
            f"fetch {weights.url} elsewhere and put it at {cached}, "
            "or set pretrained: none or a local .pth path with weights_sha256"
        ) from None


def _read_local(path: Path, sha256: str, where: str) -> object:
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise PipelineError(
            f"{where}.weights_sha256: {path} has sha256 {actual}, expected {sha256}; "
            "refusing to load it (replace the file or update weights_sha256)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise PipelineError(
            f"{where}.pretrained: {path} cannot be read with torch.load(weights_only=True): {_first_line(error)}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
