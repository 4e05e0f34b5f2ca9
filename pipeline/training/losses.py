"""The training loss: a weighted sum of registered losses (`train.loss` in params.yaml), on the main head's logits
and, times `train.aux_weight`, on the auxiliary head's. A loss is one function here, registered with its options
dataclass (`@register_loss`); an entry of `train.loss` names it, weights it and sets its options:

    loss:
      - {name: cross_entropy, weight: 1.0, class_weights: null}   # null | auto | [w0, ...]; ohem: {thresh, min_kept}
      - {name: dice, weight: 1.0}                                  # also focal (gamma) and lovasz

Cross-entropy is torch's; Dice, Focal and Lovász are segmentation_models_pytorch's (multiclass mode), imported only
when one is configured. Every loss skips the pixels labelled `IGNORE_INDEX` (void).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX
from pipeline.core.params.schema import build as build_options
from pipeline.core.params.schema import limits
from pipeline.core.params.train import TrainParams
from pipeline.prepared.balance import class_weights as balanced_weights

# (float logits N×C×H×W, int64 labels N×H×W with IGNORE_INDEX for void) → a scalar
PixelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossContext:
    """What a loss may need to know of the data: the class count, and the training split's labelled pixels per class
    (None when the prepared data predates their count)."""

    num_classes: int
    class_pixels: Sequence[int] | None = None
    where: str = "train.loss[0]"  # the entry's key in params.yaml, for messages


@dataclass(frozen=True)
class Loss:
    name: str
    options: type  # a frozen dataclass: the entry's keys other than `name` and `weight`
    build: Callable[[Any, LossContext], PixelLoss]


_REGISTERED: dict[str, Loss] = {}


def register_loss(name: str, options: type) -> Callable:
    """Register the decorated builder, `(options, context) → PixelLoss`, as loss `name` with its options dataclass."""
    def register(builder: Callable[[Any, LossContext], PixelLoss]) -> Callable[[Any, LossContext], PixelLoss]:
        _REGISTERED[name] = Loss(name, options, builder)
        return builder

    return register


# --- cross-entropy ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ohem:
    """Online hard example mining, after mmsegmentation's `OHEMPixelSampler`: the loss is averaged over the
    labelled pixels whose predicted probability of their own class is below `thresh`, and over at least the
    `min_kept` (per image of the batch) hardest of them."""

    thresh: float = field(default=0.7, metadata=limits(0, 1, low_open=True))
    min_kept: int = field(default=100_000, metadata=limits(1))


@dataclass(frozen=True)
class CrossEntropyOptions:
    """Cross-entropy over the labelled pixels, averaged over them: the loss every published VOC number uses.
    `class_weights`: null, `auto` (pipeline.prepared.balance: ENet's inverse log frequency of the training split's
    pixels), or one weight per class; `ohem`: null, or the hard pixels only (`Ohem`)."""

    class_weights: Literal["auto"] | list[float] | None = None
    ohem: Ohem | None = None


def resolved_class_weights(options: CrossEntropyOptions, context: LossContext) -> list[float] | None:
    """The weights `class_weights` stands for, one per class, or None."""
    if options.class_weights is None:
        return None
    if options.class_weights == "auto":
        if context.class_pixels is None:
            raise PipelineError(f"{context.where}.class_weights: auto needs the training split's class pixels, "
                                "which this prepared data predates; rerun the prepare stage (dvc repro prepare)")
        return balanced_weights(context.class_pixels)
    weights = list(options.class_weights)
    if len(weights) != context.num_classes or min(weights) < 0:
        raise PipelineError(f"{context.where}.class_weights: {len(weights)} weights for {context.num_classes} "
                            "classes; give one non-negative weight per class, in the order of dataset.classes")
    return weights


@register_loss("cross_entropy", CrossEntropyOptions)
def cross_entropy(options: CrossEntropyOptions, context: LossContext) -> PixelLoss:
    weights = resolved_class_weights(options, context)
    ohem = options.ohem

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = None if weights is None else torch.tensor(weights, dtype=logits.dtype, device=logits.device)
        if ohem is not None:
            labels = hard_pixels(logits, labels, ohem)
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_INDEX)

    return loss


@torch.no_grad()
def hard_pixels(logits: torch.Tensor, labels: torch.Tensor, ohem: Ohem) -> torch.Tensor:
    """`labels` with every labelled pixel that OHEM leaves out set to IGNORE_INDEX: kept are those whose probability
    of their own class is below `thresh`, and the `min_kept` × batch hardest in any case (so that a batch the model
    already gets right still has a loss, where a threshold alone would keep nothing)."""
    valid = labels != IGNORE_INDEX
    if not valid.any():
        return labels
    probability = logits.softmax(dim=1).gather(1, labels.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
    scores = probability[valid]
    keep = scores < ohem.thresh
    keep[scores.argsort()[:ohem.min_kept * labels.shape[0]]] = True
    kept = torch.zeros_like(valid)
    kept[valid] = keep
    return labels.masked_fill(valid & ~kept, IGNORE_INDEX)


# --- segmentation_models_pytorch's losses ------------------------------------------------------------------------

@dataclass(frozen=True)
class DiceOptions:
    """Soft Dice over the classes present in the batch (Milletari et al. 2016), 1 − Dice."""

    smooth: float = field(default=0.0, metadata=limits(0))


@dataclass(frozen=True)
class FocalOptions:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 − p)^gamma, so that easy pixels count less."""

    gamma: float = field(default=2.0, metadata=limits(0))


@dataclass(frozen=True)
class LovaszOptions:
    """The Lovász-softmax loss (Berman et al. 2018), a surrogate of the mean IoU, over the whole batch."""


def _smp(class_name: str) -> Callable[[Any, LossContext], PixelLoss]:
    """A builder of segmentation_models_pytorch's loss `class_name` in multiclass mode, skipping void, with the
    entry's options as its keyword arguments (the options dataclasses above name and default them as it does).
    The library is imported when a run configures one of its losses, never otherwise."""
    def build(options: Any, context: LossContext) -> PixelLoss:
        from segmentation_models_pytorch import losses

        return getattr(losses, class_name)(mode="multiclass", ignore_index=IGNORE_INDEX,
                                           **dataclasses.asdict(options))

    return build


register_loss("dice", DiceOptions)(_smp("DiceLoss"))
register_loss("focal", FocalOptions)(_smp("FocalLoss"))
register_loss("lovasz", LovaszOptions)(_smp("LovaszLoss"))  # per_image=False: smp's default, over the batch


# --- the sum --------------------------------------------------------------------------------------------------

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


def make_loss(recipe: TrainParams, num_classes: int, class_pixels: Sequence[int] | None = None,
              where: str = "train") -> SegmentationLoss:
    """The loss of `recipe` (`recipe.loss` and `aux_weight`) for `num_classes` classes, with the training split's
    `class_pixels` for the entries that weight classes by them."""
    terms = [(weight, spec.build(options, LossContext(num_classes, class_pixels, f"{where}.loss[{i}]")))
             for i, (spec, weight, options) in enumerate(typed_terms(recipe, where))]
    return SegmentationLoss(terms, recipe.aux_weight)


def describe(recipe: TrainParams, num_classes: int, class_pixels: Sequence[int] | None = None,
             where: str = "train") -> list[dict]:
    """Each term as the run records it: name, weight, every option with its default, and the class weights that
    `auto` stood for."""
    described = []
    for i, (spec, weight, options) in enumerate(typed_terms(recipe, where)):
        entry = {"name": spec.name, "weight": weight, **dataclasses.asdict(options)}
        if isinstance(options, CrossEntropyOptions) and options.class_weights == "auto":
            context = LossContext(num_classes, class_pixels, f"{where}.loss[{i}]")
            entry["class_weights"] = [round(w, 6) for w in resolved_class_weights(options, context)]
        described.append(entry)
    return described
