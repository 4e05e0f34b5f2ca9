"""Pretrained weights: a backbone's (torchvision's ImageNet files through the torch hub cache, or a local file pinned
by sha256) and a whole trained segmentation model's to start from (`models.<name>.init`: a model file of this
pipeline, a torchvision-format state dict, or torchvision's own trained weights).

This is the only file of `pipeline.models` that reads from disk or the network; the networks themselves are
built with random weights and receive their state dicts here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
from pathlib import Path
from typing import Any
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

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.params.schema import check_sha256

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


def check_source(pretrained: str, weights_sha256: str | None, key: str = "pretrained") -> None:
    """The options' own check, when params.yaml is read: `pretrained` (the option `key`) is imagenet, none or a
    local file, which must come with its sha256 (checked, with the file's existence, when it is loaded)."""
    if pretrained in ("imagenet", "none"):
        if weights_sha256 is not None:
            raise PipelineError(f"weights_sha256: only used with a local weights file, not with {key}: "
                                f"{pretrained}; remove it")
    elif weights_sha256 is not None:
        check_sha256(weights_sha256, "weights_sha256")


def check_local(pretrained: str, sha256: str | None, where: str, key: str = "pretrained") -> None:
    """The checks that need no download or hashing of a good file: a local path (the option `key`) exists and
    comes with a sha256 (`check_source` checks the values themselves)."""
    if pretrained in ("imagenet", "none"):
        return
    path = Path(pretrained)
    if not path.is_file():
        raise PipelineError(f"{where}.{key}: weights file {path} not found; use imagenet or none, or fix the path")
    if sha256 is None:
        raise PipelineError(
            f"{where}.weights_sha256: required with a local weights file; "
            f"add weights_sha256: {file_sha256(path)} (the sha256 of {path} now)"
        )


def load_backbone(backbone: nn.Module, name: str, pretrained: str, sha256: str | None, where: str) -> None:
    """Load ImageNet weights of torchvision's `name` classifier into `backbone` (its feature extractor).

    Strict for every backbone key; the classifier's keys (`fc.*`, `classifier.*`) are ignored."""
    check_local(pretrained, sha256, where)
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
                            f"{first_line(error)}") from None
    if missing or unexpected:
        raise PipelineError(
            f"{where}.pretrained: {source} is not a state dict of torchvision's {name}: "
            f"{len(missing)} keys missing ({', '.join(missing[:3])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"
        )


def _download(name: str, where: str) -> dict:
    return _fetch(IMAGENET[name], f"{where}.pretrained", f"imagenet weights for {name}",
                  "or set pretrained: none or a local .pth path with weights_sha256")


def _fetch(weights: WeightsEnum, key: str, what: str, otherwise: str) -> dict:
    """The state dict of torchvision's `weights`, from the torch hub cache or downloaded into it (hash-checked);
    offline, one line naming the file and where to put it."""
    cached = hub_path(weights)
    was_cached = cached.is_file()
    try:
        return torch.hub.load_state_dict_from_url(weights.url, check_hash=True, map_location="cpu", weights_only=True)
    # URLError, socket timeouts, SSL and connection errors are OSErrors; a truncated HTTP body is an
    # HTTPException; a download with the wrong hash prefix is a RuntimeError.
    except (OSError, RuntimeError, http.client.HTTPException, pickle.UnpicklingError, EOFError) as error:
        if was_cached:
            raise PipelineError(
                f"{key}: cached weights {cached} cannot be read ({first_line(error)}); "
                "delete the file so it is downloaded again"
            ) from None
        raise PipelineError(
            f"{key}: {what} could not be downloaded ({first_line(error)}); "
            f"fetch {weights.url} elsewhere and put it at {cached}, {otherwise}"
        ) from None


def pinned(path: Path, sha256: str | None, key: str, fix: str) -> str:
    """The sha256 of `path`, refused in one line (`key` names the pin, `fix` ends the message) when it is pinned to
    another."""
    actual = file_sha256(path)
    if sha256 is not None and actual != sha256.lower():
        raise PipelineError(f"{key}: {path} has sha256 {actual}, expected {sha256}; {fix}")
    return actual


def _read_local(path: Path, sha256: str, where: str) -> object:
    pinned(path, sha256, f"{where}.weights_sha256", "refusing to load it (replace the file or update weights_sha256)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise PipelineError(
            f"{where}.pretrained: {path} cannot be read with torch.load(weights_only=True): {first_line(error)}"
        ) from None


# --- starting from a trained segmentation model (`models.<name>.init`) ------------------------------------------

# Under this share of the backbone's tensors matching by name and shape, a source is another network, not this
# one with another head.
MIN_BACKBONE_MATCH = 0.5


def load_init(model: nn.Module, source: str, sha256: str | None, *, backbone: str | None, torchvision: Any,
              where: str) -> dict:
    """Load into `model` every tensor of `source` whose name and shape match, leaving the others as they were
    built (a classifier of another class count, a head the source lacks), and say what was done: the source, its
    sha256, how many tensors loaded and which were not. `source` is a model file of this pipeline, a
    torchvision-format state dict, or `torchvision` (`torchvision`: those weights, or None where torchvision ships
    none for these options). Refused in one line naming the file: a file that is neither, and a source under
    MIN_BACKBONE_MATCH of whose `backbone` tensors fit (another architecture)."""
    key = f"{where}.init.from"
    if source == "torchvision":
        if torchvision is None:
            raise PipelineError(f"{key}: torchvision ships no trained segmentation weights for this architecture and "
                                "these options; start from a model file instead (docs/fine-tuning.md)")
        state = _fetch(torchvision, key, f"torchvision's {torchvision}", "or start from a model file")
        name, digest = str(torchvision), file_sha256(hub_path(torchvision))
    else:
        path = Path(source)
        if not path.is_file():
            raise PipelineError(f"{key}: {path} not found; give a model file (models/<model>/model.pt of a trained "
                                "model), a torchvision state dict, or torchvision")
        digest = pinned(path, sha256, f"{where}.init.sha256",
                         "refusing to start from it (replace the file or update the pin)")
        state, name = _state_dict_of(path, key), str(path)
    target = model.state_dict()
    fits = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    prefix = f"{backbone}." if backbone else ""
    backbone_keys = [k for k in target if k.startswith(prefix)]
    matched = sum(k in fits for k in backbone_keys)
    if matched < MIN_BACKBONE_MATCH * len(backbone_keys):
        raise PipelineError(f"{key}: {name} fits {matched} of this network's {len(backbone_keys)} "
                            f"{'backbone ' if backbone else ''}tensors (names and shapes): a model of another "
                            "architecture or backbone; start from one of the same architecture and options")
    model.load_state_dict(fits, strict=False)
    return {"from": name, "sha256": digest, "loaded": len(fits),
            "reinitialized": sorted(k for k in target if k not in fits)}


def _state_dict_of(path: Path, key: str) -> dict:
    """The tensors of a model file of this pipeline (its `state_dict`) or of a torchvision-format state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a bad zip, a pickle weights_only refuses, a text file: all "not a model file"
        raise PipelineError(f"{key}: {path} cannot be read as a model ({first_line(error)}); give a model file "
                            "of this pipeline or a torchvision state dict") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict) and "architecture" in state:
        state = state["state_dict"]  # pipeline.models.saved's model file
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise PipelineError(f"{key}: {path} is not a model of this pipeline nor a torchvision state dict (a "
                            "mapping of tensor names to tensors)")
    return state
