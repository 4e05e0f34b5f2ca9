"""What one training step is: the optimiser, the learning-rate schedule and the step itself (the loss is
`pipeline.training.losses`).

`train_step` is the only implementation of a step: the training loop calls it, and so does `make bench`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pipeline.core.params.train import TrainParams
from pipeline.core.runtime import Runtime
from pipeline.training.augment import train_batch
from pipeline.training.losses import SegmentationLoss


class NonFiniteLoss(Exception):
    """The loss of a step was NaN or infinite; nothing was updated. `train_model` turns it into a PipelineError
    that names the epoch and step."""

    def __init__(self, value: float) -> None:
        super().__init__(f"loss is {value}")
        self.value = value


def make_optimizer(model: torch.nn.Module, recipe: TrainParams,
                   backbone: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """The recipe's optimiser in PyTorch's fused implementation: one kernel over all parameters, on the CPU as on
    CUDA, several times faster than the default per-parameter loop (docs/performance.md). With `head_lr_mult` ≠ 1
    two parameter groups: `backbone`'s at `lr`, everything else at `lr × head_lr_mult` (the schedule scales both)."""
    trainable: list = [p for p in model.parameters() if p.requires_grad]
    if recipe.head_lr_mult != 1.0:
        inside = {id(p) for p in backbone.parameters()}
        trainable = [{"params": [p for p in trainable if id(p) in inside], "lr": recipe.lr},
                     {"params": [p for p in trainable if id(p) not in inside], "lr": recipe.lr * recipe.head_lr_mult}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                               fused=True)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    return torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)


def lr_factor(recipe: TrainParams, iters_per_epoch: int):
    """Per-iteration LR multiplier: linear warm-up, then poly (torchvision's reference, power 0.9), cosine or flat."""
    total = recipe.epochs * iters_per_epoch
    warmup = min(recipe.warmup_epochs * iters_per_epoch, total - 1)

    def factor(iteration: int) -> float:
        if iteration < warmup:
            return 0.01 + 0.99 * iteration / warmup
        progress = min((iteration - warmup) / max(1, total - warmup), 1.0)
        if recipe.lr_schedule == "poly":
            return (1 - progress) ** recipe.poly_power
        if recipe.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainParams,
                   iters_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration (`lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, iters_per_epoch))


def train_step(model: torch.nn.Module, samples: list, optimizer: torch.optim.Optimizer, recipe: TrainParams,
               runtime: Runtime, loss_of: SegmentationLoss, frozen: Sequence[torch.nn.Parameter] = ()
               ) -> torch.Tensor:
    """One optimiser step on a list of (uint8 image, label) samples: augment on the device, forward under the
    runtime's autocast, the recipe's loss (`pipeline.training.losses`), backward, update. `frozen` parameters get no
    update (their gradients are dropped before the step, so optimisers skip them, weight decay and momentum
    included; under DDP they are still all-reduced, which keeps every rank's set of gradients the same). Returns
    the detached loss; raises `NonFiniteLoss` (before any update) when it is NaN or infinite."""
    images, labels = train_batch(samples, runtime.device, recipe.crop_size, recipe.scale_range, recipe.hflip,
                                 runtime.channels_last)
    with runtime.autocast():
        outputs = model(images)
    loss = loss_of(outputs, labels)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for parameter in frozen:
        parameter.grad = None
    optimizer.step()
    return loss.detach()
