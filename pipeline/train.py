"""The one training loop for every model: differences between FCN, U-Net and DeepLab are params, not branches.

Read top to bottom: set-up (devices, data, model, optimiser, schedule), resume, then the epoch loop
(train → validate → checkpoint → log). Runs unchanged on the CPU, one GPU, or many under `torchrun`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from pipeline import checkpoint, distributed, params as params_module
from pipeline.augment import collate_samples, train_batch
from pipeline.data import VOCPrepared
from pipeline.errors import PipelineError
from pipeline.evaluate import autocast_for, evaluate
from pipeline.models import build, set_batchnorm_momentum
from pipeline.tracking import Tracker, provenance_tags
from pipeline.voc import IGNORE_INDEX, NUM_CLASSES

log = logging.getLogger(__name__)

# Keys that change how fast training runs, not what it computes: a checkpoint stays resumable across them, and
# they are tags rather than MLflow params (a param's value may not change when a run resumes elsewhere).
_NOT_IN_HASH = ("workers", "device", "compile")


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict]
    summary: dict
    run_id: str | None
    experiment: str
    is_main: bool = True


def segmentation_loss(outputs, labels: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Cross-entropy over labelled pixels (255 = void is ignored), plus the weighted auxiliary head's loss."""
    if isinstance(outputs, dict):
        loss = F.cross_entropy(outputs["out"].float(), labels, ignore_index=IGNORE_INDEX)
        if "aux" in outputs and aux_weight > 0:
            loss = loss + aux_weight * F.cross_entropy(outputs["aux"].float(), labels, ignore_index=IGNORE_INDEX)
        return loss
    return F.cross_entropy(outputs.float(), labels, ignore_index=IGNORE_INDEX)


def lr_factor(cfg: params_module.TrainParams, iters_per_epoch: int):
    """Per-iteration LR multiplier: linear warm-up, then poly (torchvision's reference, power 0.9), cosine or flat."""
    total = cfg.epochs * iters_per_epoch
    warmup = min(cfg.warmup_epochs * iters_per_epoch, total - 1)

    def factor(iteration: int) -> float:
        if iteration < warmup:
            return 0.01 + 0.99 * iteration / warmup
        progress = min((iteration - warmup) / max(1, total - warmup), 1.0)
        if cfg.lr_schedule == "poly":
            return (1 - progress) ** cfg.poly_power
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def make_optimizer(model: torch.nn.Module, cfg: params_module.TrainParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)


def data_fingerprint(prepared: Path) -> str:
    """Identifies the prepared training data, so a checkpoint is never resumed on different data."""
    digest = hashlib.sha256()
    for split in ("train", "val"):
        index = prepared / split / "index.json"
        digest.update(index.read_bytes() if index.is_file() else b"missing")
    return digest.hexdigest()[:16]


class _StopRequest:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint at the next step and exits non-zero."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread): signals stay as they are
                pass
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self, world: distributed.World, device: torch.device) -> bool:
        if not world.distributed:
            return self.signal_name is not None
        flag = torch.tensor([1.0 if self.signal_name else 0.0], device=device)
        dist.all_reduce(flag)  # every rank stops at the same step, or the others would hang in the next all-reduce
        return bool(flag.item() > 0)


def _progress_bar(iterable, total: int, description: str, enabled: bool):
    """A tqdm bar with loss and img/s on a terminal; under DVC logs and CI the per-epoch log line is enough."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True)


def train_model(
    name: str,
    params: params_module.Params,
    *,
    prepared: Path = Path("data/prepared"),
    checkpoint_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    key = params.model_key(name)
    spec = params.model(key)
    cfg = params.train_for(key)
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    checkpoint_dir = checkpoint_dir or Path("checkpoints") / key

    # --- set-up -----------------------------------------------------------------------------------------
    world, device_ = distributed.init_from_env(cfg.device)
    on_gpu = device_.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank

    train_set, val_set = VOCPrepared(prepared, "train"), VOCPrepared(prepared, "val")
    per_step = cfg.batch_size * world.world_size
    iters_per_epoch = len(train_set) // per_step
    if iters_per_epoch == 0:
        raise PipelineError(f"models.{key}: batch size {cfg.batch_size} × {world.world_size} process(es) is larger "
                            f"than the {len(train_set)} training images: lower train.batch_size")

    net = build(spec.architecture, num_classes=NUM_CLASSES, where=f"models.{key}.options", **spec.options)
    if cfg.bn_momentum is not None:
        set_batchnorm_momentum(net, cfg.bn_momentum)
    if world.distributed and on_gpu:
        # BatchNorm statistics over the global batch; PyTorch's SyncBatchNorm exists for CUDA only, so on the
        # CPU (gloo) each rank keeps its own statistics and DDP broadcasts rank 0's at every forward.
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    channels_last = cfg.channels_last and on_gpu
    net = net.to(device_, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = make_optimizer(net, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, iters_per_epoch))

    train_hash = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_HASH}
    run_hash = checkpoint.params_hash(train_hash, dataclasses.asdict(spec), data_fingerprint(prepared))

    # --- resume -----------------------------------------------------------------------------------------
    state = checkpoint.load_latest(checkpoint_dir, run_hash) if world.is_main else None
    if world.is_main and state is None:
        checkpoint.clear(checkpoint_dir)  # unreadable leftovers of an older run must not be resumed later
    state = distributed.broadcast_object(state, world)
    history: list[dict] = []
    completed, skip_batches = 0, 0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_state(state["rng"])
        history = list(state["history"])
        completed, skip_batches = state["epoch"], state.get("batches_done", 0)
    if world.distributed:
        torch.manual_seed(cfg.seed + 1000 * world.rank + completed)  # different crops on each rank

    tracker = None
    if world.is_main:
        tracker = Tracker(params.tracking.experiment, run_id=state and state.get("run_id"), run_name=key)
        tracker.log_params({"model": key, "architecture": spec.architecture,
                            **params_module.as_flat_dict(train_hash, "train."),
                            **params_module.as_flat_dict(spec.options, "options.")})
        tracker.set_tags({**provenance_tags(str(prepared)), "model": key, "device": str(device_),
                          "world_size": world.world_size, "seed": cfg.seed, "params_hash": run_hash})
        _log_missing_epochs(tracker, history)

    model = DistributedDataParallel(net, device_ids=[device_.index] if on_gpu else None) if world.distributed else net
    if cfg.compile:
        model = torch.compile(model)
    sampler = DistributedSampler(train_set, num_replicas=world.world_size, rank=world.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)

    # --- the epoch loop ---------------------------------------------------------------------------------
    status = "FAILED"
    try:
        with _StopRequest() as stop:
            for epoch in range(completed + 1, cfg.epochs + 1):
                sampler.set_epoch(epoch)
                order = list(sampler)
                batches = [order[i : i + cfg.batch_size] for i in range(0, iters_per_epoch * cfg.batch_size, cfg.batch_size)]
                loader = DataLoader(train_set, batch_sampler=batches[skip_batches:], collate_fn=collate_samples,
                                    num_workers=cfg.workers, pin_memory=on_gpu)
                model.train()
                loss_sum = torch.zeros((), device=device_)
                seen, started = 0, time.perf_counter()
                steps = _progress_bar(enumerate(loader, start=skip_batches), iters_per_epoch - skip_batches,
                                      f"{key} epoch {epoch}/{cfg.epochs}", progress and world.is_main)
                for step, samples in steps:
                    images, labels = train_batch(samples, device_, cfg.crop_size, cfg.scale_range, cfg.hflip, channels_last)
                    with autocast_for(device_, cfg.amp):
                        outputs = model(images)
                    loss = segmentation_loss(outputs, labels, cfg.aux_weight)
                    if not torch.isfinite(loss):
                        raise PipelineError(
                            f"models.{key}: loss is {loss.item()} at epoch {epoch}, step {step + 1}; the last good "
                            f"checkpoint in {checkpoint_dir} is kept: lower the learning rate (train.lr) and rerun")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    loss_sum += loss.detach()
                    seen += len(samples)
                    if hasattr(steps, "set_postfix") and step % 10 == 0:
                        steps.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
                    if stop.requested(world, device_):
                        if world.is_main:
                            checkpoint.save(checkpoint_dir, _state(net, optimizer, scheduler, epoch - 1, step + 1,
                                                                   tracker, run_hash, history), interrupted=True)
                            status = "KILLED"
                        raise PipelineError(f"interrupted by {stop.signal_name} in epoch {epoch} after {step + 1} "
                                            f"batches; checkpoint saved to {checkpoint_dir}: rerun to resume")
                seconds = time.perf_counter() - started
                row = {"epoch": epoch, "loss": _mean_over_ranks(loss_sum, iters_per_epoch - skip_batches, world),
                       "lr": optimizer.param_groups[0]["lr"],
                       "images_per_second": seen * world.world_size / seconds if seconds else float("nan"),
                       "val_miou": None}
                skip_batches = 0
                if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
                    row["val_miou"] = validate(net, val_set, device_, world, amp=cfg.amp, channels_last=channels_last)
                history.append(row)
                if world.is_main:
                    checkpoint.save(checkpoint_dir, _state(net, optimizer, scheduler, epoch, 0, tracker, run_hash, history))
                    _log_missing_epochs(tracker, history)
                    log.info("%s epoch %d/%d: loss %.4f, val mIoU %s, %.1f img/s", key, epoch, cfg.epochs, row["loss"],
                             "-" if row["val_miou"] is None else f"{row['val_miou']:.4f}", row["images_per_second"])
        status = "FINISHED"
    finally:
        if tracker is not None and status != "FINISHED":
            tracker.close(status)

    summary = _summary(history, net, device_, world, run_hash)
    if tracker is not None:
        tracker.log_metrics({"final_val_miou": summary["final_val_miou"], "best_val_miou": summary["best_val_miou"]})
        from pipeline.render import history_figure

        tracker.log_image(history_figure(history), "history.png")
        tracker.log_model(net, num_classes=NUM_CLASSES)
        tracker.close("FINISHED")
    return TrainResult(net.cpu().eval(), history, summary,
                       tracker.run_id if tracker else None, params.tracking.experiment, world.is_main)


def validate(net, val_set, device, world: distributed.World, *, amp: bool, channels_last: bool) -> float:
    """Val mIoU at full resolution; each rank predicts its share and the confusion matrices are summed."""
    shard = range(world.rank, len(val_set), world.world_size)
    run = evaluate(net, val_set, device, indices=shard, amp=amp, channels_last=channels_last)
    run.confusion.reduce_from_all_processes()
    return run.confusion.compute()["miou"]


def _mean_over_ranks(total: torch.Tensor, steps: int, world: distributed.World) -> float:
    if world.distributed:
        total = total.clone()
        dist.all_reduce(total)
        steps *= world.world_size
    return total.item() / max(steps, 1)


def _state(net, optimizer, scheduler, epoch: int, batches_done: int, tracker, run_hash: str, history) -> dict:
    return {
        "epoch": epoch,
        "batches_done": batches_done,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None,  # bf16 autocast needs no loss scaling; the key stays for fp16 recipes
        "rng": checkpoint.rng_state(),
        "run_id": tracker.run_id if tracker else None,
        "params_hash": run_hash,
        "history": history,
    }


def _log_missing_epochs(tracker: Tracker | None, history: list[dict]) -> None:
    """Log each epoch once, even across a kill between checkpointing and logging (step = epoch)."""
    if tracker is None or not tracker.active or not history:
        return
    logged = tracker.logged_steps("loss")
    for row in history:
        if row["epoch"] not in logged:
            metrics = {k: v for k, v in row.items() if k != "epoch" and v is not None}
            tracker.log_metrics(metrics, step=row["epoch"])


def _summary(history: list[dict], net, device, world, run_hash: str) -> dict:
    scored = [row for row in history if row["val_miou"] is not None]
    best = max(scored, key=lambda row: row["val_miou"]) if scored else None
    return {
        "epochs": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "final_val_miou": scored[-1]["val_miou"] if scored else None,
        "best_val_miou": best["val_miou"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "images_per_second": sum(r["images_per_second"] for r in history) / len(history) if history else None,
        "parameters": sum(p.numel() for p in net.parameters()),
        "device": str(device),
        "world_size": world.world_size,
        "params_hash": run_hash,
    }
