"""The training loss: a weighted sum of registered losses (`train.loss` in params.yaml), on the main head's logits
and, times `train.aux_weight`, on the auxiliary head's. A loss is one function here, registered with its options
dataclass (`@register_loss`); an entry of `train.loss` names it, weights it and sets its options:

    loss:
      - {name: cross_entropy, weight: 1.0}

Every loss skips the pixels labelled `IGNORE_INDEX` (void).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX
from pipeline.core.params.schema import build as build_options
from pipeline.core.params.train import TrainParams

# (float logits N×C×H×W, int64 labels N×H×W with IGNORE_INDEX for void) → a scalar
PixelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Loss:
    name: str
    options: type  # a frozen dataclass: the entry's keys other than `name` and `weight`
    build: Callable[[Any, int], PixelLoss]  # (options, class count) → the loss


_REGISTERED: dict[str, Loss] = {}


def register_loss(name: str, options: type) -> Callable:
    """Register the decorated builder as loss `name`, with its options dataclass."""
    def register(builder: Callable[[Any, int], PixelLoss]) -> Callable[[Any, int], PixelLoss]:
        _REGISTERED[name] = Loss(name, options, builder)
        return builder

    return register


@dataclass(frozen=True)
class CrossEntropyOptions:
    """Cross-entropy over the labelled pixels, averaged over them: the loss every published VOC number uses."""


@register_loss("cross_entropy", CrossEntropyOptions)
def cross_entropy(options: CrossEntropyOptions, num_classes: int) -> PixelLoss:
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)

    return loss


class SegmentationLoss:
    """The recipe's weighted sum of losses, on `outputs` (logits, or {"out", "aux"} from a network with an
    auxiliary head in training): the main head's, plus `aux_weight` times the same sum on the auxiliary head's."""

    def __init__(self, terms: list[tuple[float, PixelLoss]], aux_weight: float) -> None:
        self.terms = terms
        self.aux_weight = aux_weight

    def _sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, loss in self.terms:
            value = loss(logits, labels)
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        return total

    def __call__(self, outputs: torch.Tensor | dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, dict):
            return self._sum(outputs.float(), labels)
        loss = self._sum(outputs["out"].float(), labels)
        if "aux" in outputs and self.aux_weight > 0:
            loss = loss + self.aux_weight * self._sum(outputs["aux"].float(), labels)
        return loss


def names() -> list[str]:
    return sorted(_REGISTERED)


def typed_terms(recipe: TrainParams, where: str = "train") -> list[tuple[Loss, float, Any]]:
    """(loss, weight, typed options) of each entry of `recipe.loss`, checked: an unknown loss or option is one line
    naming the entry; `where` is the recipe's key in messages (`train`, or `models.<name>.train`)."""
    terms = []
    for i, entry in enumerate(recipe.loss):
        key = f"{where}.loss[{i}]"
        spec = _REGISTERED.get(entry["name"])
        if spec is None:
            raise PipelineError(f"{key}.name: unknown loss {entry['name']!r}; must be one of {', '.join(names())}")
        options = build_options(spec.options, {k: v for k, v in entry.items() if k not in ("name", "weight")}, key)
        terms.append((spec, float(entry.get("weight", 1.0)), options))
    return terms


def make_loss(recipe: TrainParams, num_classes: int, where: str = "train") -> SegmentationLoss:
    """The loss of `recipe` (`recipe.loss` and `aux_weight`) for `num_classes` classes."""
    terms = [(weight, spec.build(options, num_classes)) for spec, weight, options in typed_terms(recipe, where)]
    return SegmentationLoss(terms, recipe.aux_weight)

