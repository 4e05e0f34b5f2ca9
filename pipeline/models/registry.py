"""The model registry: an architecture is one module in `pipeline/models/architectures/` that registers its
builder with its options dataclass (`@register_model`), and every name, option check and build comes from here.

Architectures are imported on demand, by name: building an FCN never imports U-Net's module, so each model's DVC
stages depend on its own network's file (dvc.yaml's `${item.architecture}`) and an edit of another leaves them up
to date.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import build as build_options
from pipeline.models import architectures
from pipeline.models.layers import zero_init_residual

Builder = Callable[[Any, int], nn.Module]  # (options, class count) → the network, with its random initialisation
WeightsLoader = Callable[[nn.Module, Any, str], None]  # (network, options, where) → pretrained weights loaded
# options → torchvision's whole-model weights enum for these options (COCO_WITH_VOC_LABELS_V1), or None
WholeModelWeights = Callable[[Any], Any]


@dataclass(frozen=True)
class Architecture:
    name: str
    options: type  # a frozen dataclass: the schema of `models.<key>.options`, with a `summary` for run names
    build: Builder
    load_weights: WeightsLoader | None  # None: the network has no pretrained weights to load
    # Named option sets (the variants `tools.model_summary` lists); the first `tested` are small, and the generic
    # tests train, export and save each.
    variants: dict[str, dict[str, Any]]
    # The submodule holding the network's backbone (a dotted path: what fine-tuning freezes, and what a model it
    # starts from must mostly fit), or None for a network without one (U-Net).
    backbone: str | None = "backbone"
    torchvision_weights: WholeModelWeights | None = None  # where torchvision ships trained segmentation weights
    tested: int = 1

    def tested_variants(self) -> dict[str, dict[str, Any]]:
        """The variants the generic tests run over."""
        return dict(list(self.variants.items())[:self.tested])


_REGISTERED: dict[str, Architecture] = {}


def register_model(name: str, options: type, *, variants: dict[str, dict[str, Any]],
                   load_weights: WeightsLoader | None = None, backbone: str | None = "backbone",
                   torchvision_weights: WholeModelWeights | None = None, tested: int = 1
                   ) -> Callable[[Builder], Builder]:
    """Register the decorated builder as architecture `name` (its module's name), with its options dataclass; the
    generic tests run over its first `tested` variants."""
    if not dataclasses.is_dataclass(options) or not hasattr(options, "summary"):
        raise TypeError(f"{name}: options must be a dataclass with a `summary` property, got {options!r}")
    if not variants:
        raise TypeError(f"{name}: list at least one variant (the first, small, is what the generic tests use)")
    if not 1 <= tested <= len(variants):
        raise TypeError(f"{name}: tested must count 1 to {len(variants)} of its variants, got {tested}")

    def register(builder: Builder) -> Builder:
        _REGISTERED[name] = Architecture(name, options, builder, load_weights, dict(variants), backbone,
                                         torchvision_weights, tested)
        return builder

    return register


def names() -> list[str]:
    """Every architecture there is: the modules of `pipeline/models/architectures/`, none of them imported."""
    return sorted(module.name for module in pkgutil.iter_modules(architectures.__path__))


def architecture(name: str, where: str = "architecture") -> Architecture:
    """The registered architecture `name`, its module imported now if it was not."""
    if name not in _REGISTERED:
        known = names()
        if name not in known:
            raise PipelineError(f"{where}: unknown architecture {name!r}; must be one of {', '.join(known)}")
        importlib.import_module(f"{architectures.__name__}.{name}")
        if name not in _REGISTERED:
            raise TypeError(f"pipeline/models/architectures/{name}.py registers no architecture named {name!r}")
    return _REGISTERED[name]


def typed_options(name: str, raw: Any = None, where: str | None = None) -> Any:
    """`raw` (a mapping, as in params.yaml) as architecture `name`'s options, checked like params.yaml's; `where`
    is the model's entry in messages (default ``models.<name>``: ``models.<name>.options.width: ...``)."""
    where = where or f"models.{name}"
    return build_options(architecture(name, f"{where}.architecture").options, raw, f"{where}.options")


def build(name: str, options: Any = None, *, num_classes: int, weights: bool = True, where: str | None = None,
          **raw_options: Any) -> nn.Module:
    """The network `name` with `options` (or `raw_options`, checked like params.yaml's) and `num_classes` outputs;
    `where` is the model's entry in messages, as for `typed_options`.

    Every ResNet block starts as its shortcut (`zero_init_residual`); with `weights` the architecture's pretrained
    weights are loaded as its options ask (`pretrained`). `weights=False` is for a network whose whole state dict
    is about to be loaded (a trained model file): nothing is fetched or read then."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise PipelineError(f"num_classes: must be a positive integer, got {num_classes!r}")
    where = where or f"models.{name}"
    if options is None:
        options = typed_options(name, raw_options, where)
    elif raw_options:
        raise TypeError("give options or raw options, not both")
    spec = architecture(name, f"{where}.architecture")
    try:
        model = spec.build(options, num_classes)
    except PipelineError as error:  # the builder's refusal of these options, said where they are
        raise PipelineError(f"{where}.{error}") from None
    zero_init_residual(model)
    if weights and spec.load_weights is not None:
        spec.load_weights(model, options, f"{where}.options")
    return model
