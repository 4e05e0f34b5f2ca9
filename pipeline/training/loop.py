"""The one training loop for every model: differences between FCN, U-Net and DeepLab are params, not branches.

`train_model` reads top to bottom as its phases: `set_up` (runtime, data, model, optimiser, schedule), `resume`
(the newest checkpoint trained with the same params and data), `start_tracking`, then per epoch
`train_one_epoch` → `validate` → `checkpoint.save` → `log_epochs`, and `finish` (summary, the model file). The step
itself is `pipeline.training.optimization.train_step`, shared with `make bench`. Runs unchanged on the CPU, one GPU,
or many under `torchrun`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from pipeline.core.errors import PipelineError
from pipeline.core.params.models import ModelParams, model_params
from pipeline.core.params.schema import ParamsFile, as_flat_dict
from pipeline.core.params.tracking import dataset_source, tracking_params
from pipeline.core.params.train import TrainParams, train_params
from pipeline.core.progress import Progress
from pipeline.core.runtime import Runtime, resolve
from pipeline.evaluation.evaluate import evaluate
from pipeline.models import weights
from pipeline.models.layers import set_batchnorm_momentum
from pipeline.models.registry import architecture, build, typed_options
from pipeline.models.saved import save_model
from pipeline.prepared.dataset import PreparedSplit
from pipeline.tracking.runs import Tracker, provenance_tags, run_name
from pipeline.training import checkpoint, distributed
from pipeline.training.augment import collate_samples
from pipeline.training.losses import SegmentationLoss, make_loss, typed_terms
from pipeline.training.losses import describe as describe_loss
from pipeline.training.optimization import NonFiniteLoss, make_optimizer, make_scheduler, train_step

log = logging.getLogger(__name__)

# Keys that change how fast training runs, not what it computes: a checkpoint stays resumable across them, and
# they are tags rather than MLflow params (a param's value may not change when a run resumes elsewhere).
_NOT_IN_HASH = ("workers", "device", "compile")


@dataclass(frozen=True)
class TrainingJob:
    """What training one model reads from params.yaml, and nothing more: its entry of `models` (with the typed
    options of its architecture), its recipe (`train` with the model's overrides), the MLflow experiment, and the
    dataset's name and source for the run's record."""

    key: str
    model: ModelParams
    options: Any  # the architecture's options dataclass (`pipeline.models.registry.typed_options`)
    recipe: TrainParams
    experiment: str
    dataset_name: str
    dataset_source: str

    @classmethod
    def from_params(cls, params: ParamsFile, name: str) -> TrainingJob:
        """Model `name` of `params`; every mistake in the sections it reads is one line, before any work."""
        key, model = model_params(params, name)
        recipe = train_params(params, key)
        with params.naming_errors():
            options = typed_options(model.architecture, model.options, f"models.{key}")
            typed_terms(recipe, loss_key(key, model))
            if architecture(model.architecture).backbone is None:
                for option, neutral in (("freeze_backbone_epochs", 0), ("head_lr_mult", 1.0)):
                    if getattr(recipe, option) != neutral:
                        raise PipelineError(f"models.{key}.train.{option}: architecture {model.architecture} has no "
                                            "backbone to tell apart from the rest; remove it")
        return cls(key, model, options, recipe, tracking_params(params).experiment, params.dataset_name(),
                   dataset_source(params))


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict]
    summary: dict
    run_id: str | None
    experiment: str
    checkpoint_dir: Path  # this params set's checkpoints: the stage removes them once its outputs are written
    is_main: bool = True


@dataclass
class Session:
    """Everything `set_up` builds for one model's training: read by every later phase."""

    key: str
    recipe: TrainParams
    world: distributed.World
    runtime: Runtime
    train_set: PreparedSplit
    val_set: PreparedSplit
    iters_per_epoch: int
    net: torch.nn.Module  # the bare network: what is checkpointed, validated and saved
    model: torch.nn.Module  # what the step calls: `net`, wrapped in DDP and/or compiled as asked
    loss: SegmentationLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: DistributedSampler
    run_hash: str
    checkpoint_dir: Path  # this params set's own directory under the model's checkpoint root
    backbone: torch.nn.Module | None  # what `freeze_backbone_epochs` freezes and `head_lr_mult` tells apart
    init: dict | None  # what `models.<key>.init` loaded (pipeline.models.weights.load_init), or None
    history: list[dict] = field(default_factory=list)
    resumed_run_id: str | None = None  # the MLflow run of the checkpoint resumed from


def train_model(job: TrainingJob, *, prepared: Path, checkpoint_dir: Path, model_file: Path | None = None,
                device: str | None = None, progress: bool = True) -> TrainResult:
    """Train `job`'s model on the prepared data; returns the trained network (on the CPU, in eval mode), its
    per-epoch history and summary. `checkpoint_dir`: the model's checkpoint root (each params set has its own
    directory in it). `model_file`: where rank 0 writes the trained model (the file that is also logged to MLflow).
    `device` overrides `train.device`."""
    session = set_up(job, prepared, checkpoint_dir, device)
    first_epoch, skip_batches = resume(session)
    tracker = start_tracking(session, job, prepared) if session.world.is_main else None
    stop = _StopRequest()
    try:
        with stop:
            for epoch in range(first_epoch, session.recipe.epochs + 1):
                row = train_one_epoch(session, epoch, skip_batches, stop, tracker, progress)
                skip_batches = 0
                if epoch % session.recipe.val_every == 0 or epoch == session.recipe.epochs:
                    row["val_miou"] = validate(session)
                session.history.append(row)
                if session.world.is_main:
                    checkpoint.save(session.checkpoint_dir, _state(session, epoch, 0, tracker))
                    log_epochs(tracker, session.history)
                    _log_line(session, row)
    except BaseException:
        if tracker is not None:
            tracker.close("KILLED" if stop.signal_name else "FAILED")
        raise
    return finish(session, tracker, job, model_file)


# --- the phases, in the order they run ------------------------------------------------------------------------

def set_up(job: TrainingJob, prepared: Path, checkpoint_root: Path, device: str | None) -> Session:
    """Runtime, seeds, data, network, loss, optimiser and schedule, before any checkpoint is looked at."""
    key, recipe = job.key, job.recipe
    if device is not None:
        recipe = dataclasses.replace(recipe, device=device)
    world, torch_device = distributed.init_from_env(recipe.device)
    policy = resolve(torch_device, amp=recipe.amp, channels_last=recipe.channels_last, compile=recipe.compile,
                     training=True)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)  # identical initial weights on every rank

    train_set, val_set = PreparedSplit(prepared, "train"), PreparedSplit(prepared, "val")
    iters_per_epoch = len(train_set) // (recipe.batch_size * world.world_size)
    if iters_per_epoch == 0:
        raise PipelineError(f"models.{key}: batch size {recipe.batch_size} × {world.world_size} process(es) is "
                            f"larger than the {len(train_set)} training images: lower train.batch_size")

    num_classes = train_set.labels.num_classes
    loss = make_loss(recipe, num_classes, train_set.class_pixels, loss_key(key, job.model))
    spec = architecture(job.model.architecture)
    init = job.model.init
    # A model that starts from a trained one never fetches the backbone's ImageNet weights that would be replaced.
    net = build(job.model.architecture, job.options, num_classes=num_classes, weights=init is None,
                where=f"models.{key}")
    loaded = None
    if init is not None:
        whole_model = spec.torchvision_weights(job.options) if spec.torchvision_weights else None
        loaded = weights.load_init(net, init.source, init.sha256, backbone=spec.backbone, torchvision=whole_model,
                                   where=f"models.{key}")
        log.info("models.%s.init: %d tensors from %s (sha256 %s), %d left as built: %s", key, loaded["loaded"],
                 loaded["from"], loaded["sha256"][:12], len(loaded["reinitialized"]),
                 ", ".join(loaded["reinitialized"][:6]) + (" …" if len(loaded["reinitialized"]) > 6 else ""))
    if recipe.aux_weight > 0 and not getattr(job.options, "aux_loss", False):
        log.info("train.aux_weight %g does not apply: models.%s has no auxiliary head", recipe.aux_weight, key)
    backbone = net.get_submodule(spec.backbone) if spec.backbone else None
    if recipe.bn_momentum is not None:
        set_batchnorm_momentum(net, recipe.bn_momentum)
    if world.distributed and policy.on_gpu:
        # BatchNorm statistics over the global batch; PyTorch's SyncBatchNorm exists for CUDA only, so on the
        # CPU (gloo) each rank keeps its own statistics and DDP broadcasts rank 0's at every forward.
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = policy.place_model(net)
    optimizer = make_optimizer(net, recipe, backbone)
    scheduler = make_scheduler(optimizer, recipe, iters_per_epoch)
    model = net
    if world.distributed:
        model = DistributedDataParallel(net, device_ids=[torch_device.index] if policy.on_gpu else None)
    if policy.compile:
        model = torch.compile(model)
    sampler = DistributedSampler(train_set, num_replicas=world.world_size, rank=world.rank, shuffle=True,
                                 seed=recipe.seed, drop_last=True)
    started_from = {"from": loaded["from"], "sha256": loaded["sha256"]} if loaded else None
    run_hash = checkpoint.params_hash(_hashed(recipe), {"architecture": job.model.architecture,
                                                        "options": dataclasses.asdict(job.options)},
                                      data_fingerprint(prepared), *([started_from] if started_from else []))
    if world.is_main:
        checkpoint.prune(checkpoint_root, run_hash)
    return Session(key, recipe, world, policy, train_set, val_set, iters_per_epoch, net, model, loss, optimizer,
                   scheduler, sampler, run_hash, checkpoint.run_directory(checkpoint_root, run_hash), backbone, loaded)


def resume(session: Session) -> tuple[int, int]:
    """Load the newest checkpoint trained with the same params and data, if any (rank 0 reads it, every rank gets
    it); returns the first epoch to run and how many of its batches are already done."""
    world = session.world
    state = checkpoint.load_latest(session.checkpoint_dir, session.run_hash) if world.is_main else None
    state = distributed.broadcast_object(state, world)
    completed, skip_batches = 0, 0
    if state is not None:
        session.net.load_state_dict(state["model"])
        session.optimizer.load_state_dict(state["optimizer"])
        session.scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_state(state["rng"])
        session.history = list(state["history"])
        completed, skip_batches = state["epoch"], state.get("batches_done", 0)
        session.resumed_run_id = state.get("run_id")
    if world.distributed:
        torch.manual_seed(session.recipe.seed + 1000 * world.rank + completed)  # different crops on each rank
    return completed + 1, skip_batches


def start_tracking(session: Session, job: TrainingJob, prepared: Path) -> Tracker:
    """The MLflow run (the resumed one when a checkpoint names it), its params, provenance tags, and any epoch
    that a kill kept from being logged."""
    provenance = provenance_tags(str(prepared))
    tracker = Tracker(job.experiment, run_id=session.resumed_run_id,
                      run_name=run_name(session.key, job.options.summary, provenance))
    recipe = {key: value for key, value in _hashed(session.recipe).items() if key != "loss"}
    terms = describe_loss(session.recipe, session.train_set.labels.num_classes, session.train_set.class_pixels,
                          loss_key(job.key, job.model))
    tracker.log_params({"model": session.key, "architecture": job.model.architecture,
                        **as_flat_dict(recipe, "train."), "train.loss": json.dumps(terms),
                        **as_flat_dict(job.options, "options."), **_init_params(session.init)})
    tracker.set_tags({**provenance, "model": session.key, "device": str(session.runtime.device),
                      "world_size": session.world.world_size, "seed": session.recipe.seed,
                      "params_hash": session.run_hash})
    digest = provenance["data_dvc_md5"]  # DVC's hash of the prepared data; outside DVC, its index's
    tracker.log_dataset(job.dataset_name, data_fingerprint(prepared) if digest == "unknown" else digest,
                        job.dataset_source)
    log_epochs(tracker, session.history)
    return tracker


def train_one_epoch(session: Session, epoch: int, skip_batches: int, stop: _StopRequest, tracker: Tracker | None,
                    progress: bool) -> dict:
    """One pass over this rank's share of the training set (less the batches a mid-epoch checkpoint already
    did); returns the epoch's row of the history, without its validation score."""
    recipe, world = session.recipe, session.world
    session.sampler.set_epoch(epoch)
    order = list(session.sampler)
    batches = [order[i:i + recipe.batch_size]
               for i in range(0, session.iters_per_epoch * recipe.batch_size, recipe.batch_size)]
    loader = DataLoader(session.train_set, batch_sampler=batches[skip_batches:], collate_fn=collate_samples,
                        num_workers=recipe.workers, pin_memory=session.runtime.on_gpu,
                        worker_init_fn=_leave_signals_to_the_main_process)
    session.model.train()
    frozen = []
    if epoch <= recipe.freeze_backbone_epochs:
        session.backbone.eval()  # BatchNorm statistics (and dropout) of the backbone untouched too
        frozen = [p for p in session.backbone.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=session.runtime.device)
    seen, done, interrupted, started = 0, skip_batches, False, time.perf_counter()
    with Progress(session.iters_per_epoch, initial=skip_batches, desc=f"{session.key} epoch {epoch}/{recipe.epochs}",
                  unit="batches", enabled=progress and world.is_main, log_lines=False) as bar:
        try:
            for samples in loader:
                try:
                    loss = train_step(session.model, samples, session.optimizer, recipe, session.runtime,
                                      session.loss, frozen)
                except NonFiniteLoss as error:
                    raise PipelineError(
                        f"models.{session.key}: {error} at epoch {epoch}, step {done + 1}; the last good checkpoint "
                        f"in {session.checkpoint_dir} is kept: lower the learning rate (train.lr) and rerun") from None
                session.scheduler.step()
                loss_sum += loss
                seen += len(samples)
                done += 1
                bar.update(1)
                if done % 10 == 1 and bar.on_terminal:  # .item() waits for the GPU: only when someone watches
                    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
                if stop.requested(world, session.runtime.device):
                    interrupted = True
                    break
        except RuntimeError:
            # A signal sent to the whole process group (a scheduler, `timeout`, Ctrl-C) can reach a DataLoader
            # worker before `_leave_signals_to_the_main_process` runs in it; the loader then fails. The
            # batches done so far are as good as ever: checkpoint them like any other interruption.
            if stop.signal_name is None:
                raise
            interrupted = True
    if interrupted:
        if world.is_main:
            checkpoint.save(session.checkpoint_dir, _state(session, epoch - 1, done, tracker), interrupted=True)
        raise PipelineError(f"interrupted by {stop.signal_name} in epoch {epoch} after {done} batches; "
                            f"checkpoint saved to {session.checkpoint_dir}: rerun to resume")
    seconds = time.perf_counter() - started
    return {"epoch": epoch, "loss": _mean_over_ranks(loss_sum, session.iters_per_epoch - skip_batches, world),
            "lr": session.optimizer.param_groups[0]["lr"],
            "images_per_second": seen * world.world_size / seconds if seconds else float("nan"),
            "val_miou": None}


def validate(session: Session) -> float:
    """Val mIoU at full resolution; each rank predicts its share and the confusion matrices are summed."""
    world = session.world
    shard = range(world.rank, len(session.val_set), world.world_size)
    run = evaluate(session.net, session.val_set, session.runtime, indices=shard)
    run.confusion.reduce_from_all_processes()
    return run.confusion.compute()["miou"]


def log_epochs(tracker: Tracker | None, history: list[dict]) -> None:
    """Log each epoch once, even across a kill between checkpointing and logging (step = epoch)."""
    if tracker is None or not tracker.active or not history:
        return
    logged = tracker.logged_steps("loss")
    for row in history:
        if row["epoch"] not in logged:
            metrics = {k: v for k, v in row.items() if k != "epoch" and v is not None}
            tracker.log_metrics(metrics, step=row["epoch"])


def finish(session: Session, tracker: Tracker | None, job: TrainingJob, model_file: Path | None) -> TrainResult:
    """The summary, and on rank 0 the model file and the final metrics in MLflow. (The served model is logged by the
    evaluate stage, which registers it; the training curves are drawn by the render stage.)"""
    summary = _summary(session)
    if session.world.is_main and model_file is not None:
        save_model(model_file, session.net, architecture=job.model.architecture, options=job.options,
                   labels=session.train_set.labels)
    if tracker is not None:
        tracker.log_metrics({"final_val_miou": summary["final_val_miou"], "best_val_miou": summary["best_val_miou"]})
        tracker.close("FINISHED")
    return TrainResult(session.net.cpu().eval(), session.history, summary, tracker.run_id if tracker else None,
                       job.experiment, session.checkpoint_dir, session.world.is_main)


# --- helpers --------------------------------------------------------------------------------------------------

def loss_key(key: str, model: ModelParams) -> str:
    """Where the model's loss is set in params.yaml, for messages: its own `train.loss`, or the shared one."""
    return f"models.{key}.train" if "loss" in model.train else "train"


def data_fingerprint(prepared: Path) -> str:
    """Identifies the prepared training data, so a checkpoint is never resumed on different data."""
    digest = hashlib.sha256()
    for split in ("train", "val"):
        index = prepared / split / "index.json"
        digest.update(index.read_bytes() if index.is_file() else b"missing")
    return digest.hexdigest()[:16]


def _hashed(recipe: TrainParams) -> dict:
    """The recipe keys that decide what training computes (see `_NOT_IN_HASH`)."""
    return {k: v for k, v in dataclasses.asdict(recipe).items() if k not in _NOT_IN_HASH}


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


def _leave_signals_to_the_main_process(_worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM and SIGINT: sent to the process group, they would kill the worker and fail
    the loader before the main process could save its checkpoint; the main process stops the workers itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _mean_over_ranks(total: torch.Tensor, steps: int, world: distributed.World) -> float:
    if world.distributed:
        total = total.clone()
        dist.all_reduce(total)
        steps *= world.world_size
    return total.item() / max(steps, 1)


def _state(session: Session, epoch: int, batches_done: int, tracker: Tracker | None) -> dict:
    return {
        "epoch": epoch,
        "batches_done": batches_done,
        "model": session.net.state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "rng": checkpoint.rng_state(),
        "run_id": tracker.run_id if tracker else None,
        "params_hash": session.run_hash,
        "history": session.history,
    }


def _init_params(init: dict | None) -> dict:
    """What `models.<key>.init` loaded, as flat strings and numbers (MLflow params, the summary)."""
    if init is None:
        return {}
    return {"init.from": init["from"], "init.sha256": init["sha256"], "init.loaded": init["loaded"],
            "init.reinitialized": ", ".join(init["reinitialized"])}


def _log_line(session: Session, row: dict) -> None:
    val = "-" if row["val_miou"] is None else f"{row['val_miou']:.4f}"
    log.info("%s epoch %d/%d: loss %.4f, val mIoU %s, %.1f img/s", session.key, row["epoch"], session.recipe.epochs,
             row["loss"], val, row["images_per_second"])


def _summary(session: Session) -> dict:
    history = session.history
    scored = [row for row in history if row["val_miou"] is not None]
    best = max(scored, key=lambda row: row["val_miou"]) if scored else None
    return {
        "epochs": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "final_val_miou": scored[-1]["val_miou"] if scored else None,
        "best_val_miou": best["val_miou"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "images_per_second": sum(r["images_per_second"] for r in history) / len(history) if history else None,
        "parameters": sum(p.numel() for p in session.net.parameters()),
        "device": str(session.runtime.device),
        "peak_memory_mb": round(session.runtime.peak_memory_mb(), 1),
        "world_size": session.world.world_size,
        "params_hash": session.run_hash,
        **{name.replace(".", "_"): value for name, value in _init_params(session.init).items()},
    }
