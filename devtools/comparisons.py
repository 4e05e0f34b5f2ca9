"""`make bench`'s side-by-side comparisons: the project's path against what a user would otherwise pick, measured in
the same run on the same data, each reduced to one ratio (project over alternative; above 1 = the project is faster).

  loader     PreparedSplit + the training augmentation (on the training device) vs torchvision's VOCSegmentation
             (PIL decode of every JPEG and PNG) + the torchvision.transforms.v2 recipe of torchvision's segmentation
             reference (random resize, flip, pad-and-crop, to float, normalise), same crop and batch, 0 and 2 workers
  train      the training loop's step (`train_step` under the runtime policy) vs a plain fp32 eager step in the style
             of torchvision's reference (batch already on the device, SGD, cross-entropy with the aux head at 0.5)
  confusion  the project's bincount confusion matrix vs torchmetrics' MulticlassConfusionMatrix, same predictions
  evaluate   (CUDA) images of many sizes through the evaluate stage's path (one at a time, no autotuning, its
             policy for the network) vs the landed path (bf16, channels-last, cudnn.benchmark on); the opt-in
             same-size batches vs one at a time, with the pixels whose prediction the batch changes; and each
             precision × memory format, to choose them per network
  compile    (CUDA, `Settings.compile_variants`) the step compiled by torch.compile vs eager, with the first
             step's seconds and the steps it takes to break even

and, on CUDA, model FLOP utilisation: FLOPs of one training step (torch.utils.flop_counter) × steps/s over the
device's dense bf16 peak, and the project's step under each precision × memory format, to choose them per model.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.core import runtime
from pipeline.core.labels import IGNORE_INDEX, NUM_CLASSES, VOC_LABELS
from pipeline.core.params.train import TrainParams
from pipeline.evaluation.metrics import ConfusionMatrix
from pipeline.models.registry import build
from pipeline.prepared.dataset import PreparedSplit
from pipeline.prepared.transforms import MEAN, STD
from pipeline.training.augment import collate_samples, train_batch
from pipeline.training.losses import make_loss
from pipeline.training.optimization import make_optimizer, train_step

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets, for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "L40S": 362.0}

# Each precision × memory format on CUDA: (bf16 autocast, channels-last).
POLICIES = {"bf16+channels_last": (True, True), "bf16+nchw": (True, False), "fp32+channels_last": (False, True),
            "fp32+nchw": (False, False)}


def policy_name(policy: runtime.Runtime) -> str:
    return (f"{'bf16' if policy.autocast_dtype is not None else 'fp32'}+"
            f"{'channels_last' if policy.channels_last else 'nchw'}")


def _passes(make_iterator: Callable[[], Any], budget_s: float) -> tuple[int, float]:
    """Samples per second over whole passes (at least 2) after one untimed pass (workers started, caches warm)."""
    for _ in make_iterator():
        pass
    samples, passes, started = 0, 0, time.perf_counter()
    while passes < 2 or time.perf_counter() - started < budget_s:
        for count in make_iterator():
            samples += count
        passes += 1
    return samples, time.perf_counter() - started


def project_loader(prepared: Path, recipe: TrainParams, device: torch.device, workers: int, seed: int):
    """The training loop's input path: packed arrays → DataLoader → scale/crop/flip/normalise on `device`."""
    loader = DataLoader(PreparedSplit(prepared, "train"), batch_size=recipe.batch_size, shuffle=True,
                        collate_fn=collate_samples, num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed))

    def batches():
        for samples in loader:
            images, _labels = train_batch(samples, device, recipe.crop_size, recipe.scale_range, recipe.hflip)
            yield len(images)
    return batches


def torchvision_dataset(voc_root: Path, recipe: TrainParams):
    """torchvision's way: VOCSegmentation decodes JPEG and PNG with PIL per sample, then the transforms.v2 recipe
    of torchvision's segmentation reference; samples are (normalised float image, int64 mask) of the crop size."""
    from torchvision import tv_tensors
    from torchvision.datasets import VOCSegmentation, wrap_dataset_for_transforms_v2
    from torchvision.transforms import v2

    crop = list(recipe.crop_size)
    base = min(crop)  # the reference draws the short side from [0.5, 2] × base_size
    transform = v2.Compose([
        v2.RandomResize(int(recipe.scale_range[0] * base), int(recipe.scale_range[1] * base)),
        v2.RandomHorizontalFlip(0.5 if recipe.hflip else 0.0),
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.ToImage(), v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
                                 scale=True),
        v2.Normalize(MEAN, STD),
        v2.Lambda(_drop_channel, tv_tensors.Mask),  # 1×H×W from PIL → H×W, what the loss takes
    ])
    return wrap_dataset_for_transforms_v2(VOCSegmentation(str(voc_root), year="2012", image_set="train",
                                                          transforms=transform))


def _drop_channel(mask: torch.Tensor) -> torch.Tensor:
    return mask.squeeze(0)


def torchvision_loader(voc_root: Path, recipe: TrainParams, device: torch.device, workers: int, seed: int):
    """`torchvision_dataset` through a DataLoader with the decoding and augmentation in its workers."""
    loader = DataLoader(torchvision_dataset(voc_root, recipe), batch_size=recipe.batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed))

    def batches():
        for images, labels in loader:
            images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            yield len(images)
    return batches


def compare_loader(voc_root: Path, prepared: Path, recipe: TrainParams, device: torch.device, workers: int,
                   budget_s: float, seed: int = 0) -> dict:
    rows = {}
    for name, make in (("project", project_loader(prepared, recipe, device, workers, seed)),
                       ("torchvision", torchvision_loader(voc_root, recipe, device, workers, seed))):
        samples, seconds = _passes(make, budget_s)
        rows[name] = samples / seconds
    return {"project_samples_per_second": rows["project"], "torchvision_samples_per_second": rows["torchvision"],
            "ratio": rows["project"] / rows["torchvision"]}


def _median_time(step: Callable[[], None], warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def plain_fp32_step(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    optimizer: torch.optim.Optimizer) -> None:
    """torchvision's reference step: fp32, default memory format, `out` + 0.5 × `aux` cross-entropy."""
    outputs = net(images)
    outputs = outputs if isinstance(outputs, dict) else {"out": outputs}
    loss = F.cross_entropy(outputs["out"], labels, ignore_index=IGNORE_INDEX)
    if "aux" in outputs:
        loss = loss + 0.5 * F.cross_entropy(outputs["aux"], labels, ignore_index=IGNORE_INDEX)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def compare_train_step(samples: list, architecture: str, options: dict, recipe: TrainParams, device: torch.device,
                       warmup: int, steps: int, seed: int = 0) -> dict:
    """img/s of the project's step and of the plain step on the same batch; on CUDA also the FLOP utilisation and
    the project's step under each precision × memory format (`policies`), to choose them per model."""
    batch = samples[:recipe.batch_size]
    policy = runtime.resolve(device, amp=recipe.amp, channels_last=recipe.channels_last, training=True)
    project = _median_time(_project_step(batch, architecture, options, recipe, policy, seed), warmup, steps)

    torch.manual_seed(seed)
    plain_net = build(architecture, num_classes=NUM_CLASSES, **options).to(device).train()
    plain_optimizer = torch.optim.SGD(plain_net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images, labels = train_batch(batch, device, recipe.crop_size, recipe.scale_range, recipe.hflip)
    plain = _median_time(lambda: (plain_fp32_step(plain_net, images, labels, plain_optimizer), policy.synchronize()),
                         warmup, steps)
    row = {"project_images_per_second": len(batch) / project, "plain_fp32_images_per_second": len(batch) / plain,
           "ratio": plain / project}
    if device.type == "cuda":
        row.update(flop_utilisation(plain_net, images, labels, plain_optimizer, len(batch) / project, device))
        row["policies"] = {
            name: len(batch) / _median_time(
                _project_step(batch, architecture, options, recipe,
                              runtime.resolve(device, amp=amp, channels_last=nhwc, training=True), seed),
                warmup, steps)
            for name, (amp, nhwc) in POLICIES.items()}
    return row


def _project_step(batch: list, architecture: str, options: dict, recipe: TrainParams, policy: runtime.Runtime,
                  seed: int, *, compiled: bool = False) -> Callable[[], None]:
    """One call = one training-loop step (`train_step`) on `batch` under `policy`, waited for; a fresh network and
    optimizer, compiled by torch.compile if asked."""
    torch.manual_seed(seed)
    net = policy.place_model(build(architecture, num_classes=NUM_CLASSES, **options)).train()
    optimizer = make_optimizer(net, recipe)
    model = torch.compile(net) if compiled else net
    loss = make_loss(recipe, NUM_CLASSES)
    return lambda: (train_step(model, batch, optimizer, recipe, policy, loss), policy.synchronize())


def compare_compile(samples: list, architecture: str, options: dict, recipe: TrainParams, device: torch.device,
                    steps: int, seed: int = 0) -> dict:
    """(CUDA) the training step compiled (torch.compile, default mode) vs eager under the same policy: the first
    compiled step's seconds (the compilation) and the steady-state ratio; `break_even_steps` is how many steps the
    compiled run needs before it is ahead."""
    batch = samples[:recipe.batch_size]
    policy = runtime.resolve(device, amp=recipe.amp, channels_last=recipe.channels_last, training=True)
    eager = _median_time(_project_step(batch, architecture, options, recipe, policy, seed), 3, steps)
    step = _project_step(batch, architecture, options, recipe, policy, seed, compiled=True)
    started = time.perf_counter()
    step()
    first_step = time.perf_counter() - started
    compiled = _median_time(step, 2, steps)
    gain = eager - compiled
    return {"eager_images_per_second": len(batch) / eager, "compiled_images_per_second": len(batch) / compiled,
            "first_step_seconds": first_step, "ratio": eager / compiled,
            "break_even_steps": (first_step - compiled) / gain if gain > 0 else None}


def flop_utilisation(net, images, labels, optimizer, images_per_second: float, device: torch.device) -> dict:
    """Model FLOPs of one training step (forward and backward, counted by torch.utils.flop_counter) × the
    project's steps/s, over the device's dense bf16 peak (None where the device is not in PEAK_BF16_TFLOPS)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        plain_fp32_step(net, images, labels, optimizer)
    flops_per_image = counter.get_total_flops() / len(images)
    name = torch.cuda.get_device_name(device)
    peak = next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)
    achieved = flops_per_image * images_per_second
    return {"gflops_per_image": flops_per_image / 1e9, "achieved_tflops": achieved / 1e12,
            "peak_bf16_tflops": peak, "flop_utilisation": achieved / (peak * 1e12) if peak else None}


def compare_confusion(size: tuple[int, int], images: int, device: torch.device, repeats: int, seed: int = 0) -> dict:
    """Accumulating `images` predictions of `size` (with void pixels) into a 21-class confusion matrix."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    generator = torch.Generator().manual_seed(seed)
    predictions = torch.randint(0, NUM_CLASSES, (images, *size), generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (images, *size), generator=generator)
    labels[:, ::7] = IGNORE_INDEX
    labels = labels.to(device)

    def ours() -> torch.Tensor:
        matrix = ConfusionMatrix(NUM_CLASSES, device=device)
        for prediction, label in zip(predictions, labels):
            matrix.update(prediction, label)
        return matrix.matrix

    def theirs() -> torch.Tensor:
        metric = MulticlassConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX, validate_args=False).to(device)
        for prediction, label in zip(predictions, labels):
            metric.update(prediction, label)
        return metric.compute()

    if not torch.equal(ours().long().cpu(), theirs().long().cpu()):
        raise AssertionError("the project's confusion matrix differs from torchmetrics' on the same predictions")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    project = _median_time(lambda: (ours(), sync()), 1, repeats)
    torchmetrics = _median_time(lambda: (theirs(), sync()), 1, repeats)
    return {"project_images_per_second": images / project, "torchmetrics_images_per_second": images / torchmetrics,
            "ratio": torchmetrics / project}


# Size families of `voc_like_sizes`: one per path of the evaluation comparison (the landed path, the batches, and
# each precision × memory format), so that every path meets shapes none of the others has set up.
FAMILIES = 6

def voc_like_sizes(images: int, seed: int = 0, family: int = 0) -> list[tuple[int, int]]:
    """(height, width) pairs shaped like VOC's: 500 px on the long side, 281–500 on the short, mostly landscape.
    Half are one typical size (VOC's is 500×375 / 375×500), the rest drawn anew: an assumption, as VOC's own
    histogram is not at hand. The `FAMILIES` families share no size (every short side ≡ family mod FAMILIES, the
    typical one 375 + family), so that each path of a comparison meets as many new shapes as the others."""
    generator = torch.Generator().manual_seed(seed)
    sizes = []
    for _ in range(images):
        landscape = float(torch.rand((), generator=generator)) < 0.7
        typical = float(torch.rand((), generator=generator)) < 0.5
        drawn = int(torch.randint(283, 501, (), generator=generator))
        short = 375 + family if typical else drawn - (drawn - family) % FAMILIES
        sizes.append((short, 500) if landscape else (500, short))
    return sizes


def compare_evaluate(architecture: str, options: dict, images: int, device: torch.device, seed: int = 0,
                     batch_size: int = 8, policy: runtime.Runtime | None = None) -> dict:
    """(CUDA) `evaluation.evaluate` as the evaluate stage runs it (one image at a time, no autotuning, under
    `policy`, by default the stage's) against the landed path: one image at a time under bf16 autocast and
    channels-last with cudnn.benchmark on (autotuning every new shape, as evaluation first ran); the opt-in
    same-size batches (`evaluate.batch_size`); and, on CUDA, every precision × memory format (`policies`). Each
    path first meets sizes it has not seen ("cold", as a fresh evaluate process does; each on its own family of
    sizes), then the same images again ("warm"). `differing_pixels` counts the batched predictions that are not
    what the image gets alone."""
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.evaluation.predict import predict

    def dataset(family: int) -> list:
        generator = torch.Generator().manual_seed(seed)
        return [(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator),
                 torch.randint(0, NUM_CLASSES, (h, w), dtype=torch.uint8, generator=generator))
                for h, w in voc_like_sizes(images, seed, family)]

    torch.manual_seed(seed)
    net = build(architecture, num_classes=NUM_CLASSES, **options).eval()
    policy = policy or runtime.resolve(device, network=net)
    landed = runtime.resolve(device, amp=True, channels_last=True)
    warm_up = [(image[:, :64, :64], label[:64, :64]) for image, label in dataset(0)[:2]]
    evaluate(policy.place_model(net), warm_up, policy, labels=VOC_LABELS)  # the CUDA context and the library handles

    def timed(data: list, under: runtime.Runtime, batch: int = 1, autotune: bool = False) -> tuple[float, dict]:
        model = under.place_model(net)
        predictions: dict[int, torch.Tensor] = {}
        previous = torch.backends.cudnn.benchmark
        started = time.perf_counter()
        if autotune:  # evaluate() turns autotuning off; the path it replaced called predict() with it on
            torch.backends.cudnn.benchmark = True
            try:
                for index, (image, _label) in enumerate(data):
                    predictions[index] = predict(model, image.to(device), under)
            finally:
                torch.backends.cudnn.benchmark = previous
        else:
            evaluate(model, data, under, batch_size=batch, labels=VOC_LABELS,
                     on_prediction=lambda index, prediction, _label: predictions.__setitem__(index, prediction))
        under.synchronize()
        return (time.perf_counter() - started) / len(data), predictions

    landed_data, batched_data = dataset(0), dataset(1)
    seconds = {"autotuned_cold": timed(landed_data, landed, autotune=True)[0]}
    candidates = ({name: runtime.resolve(device, amp=amp, channels_last=nhwc) for name, (amp, nhwc) in POLICIES.items()}
                  if device.type == "cuda" else {policy_name(policy): policy})
    candidates[policy_name(policy)] = policy
    by_policy = {}
    for family, (name, under) in enumerate(candidates.items(), start=2):
        data = dataset(family)
        by_policy[name] = {"cold_ms_per_image": timed(data, under)[0] * 1000,
                           "warm_ms_per_image": timed(data, under)[0] * 1000}
    project = by_policy[policy_name(policy)]
    seconds["batched_cold"] = timed(batched_data, policy, batch_size)[0]
    seconds["batched_warm"], batched = timed(batched_data, policy, batch_size)
    _, alone = timed(batched_data, policy)
    differing = sum(int((batched[index] != prediction).sum()) for index, prediction in alone.items())
    return {"images": images, "distinct_sizes": len(set(voc_like_sizes(images, seed))), "batch_size": batch_size,
            "policy": policy_name(policy), "project_cold_ms_per_image": project["cold_ms_per_image"],
            "project_warm_ms_per_image": project["warm_ms_per_image"],
            **{f"{name}_ms_per_image": value * 1000 for name, value in seconds.items()},
            "policies": by_policy, "differing_pixels": differing,
            "ratio": seconds["autotuned_cold"] * 1000 / project["cold_ms_per_image"],
            "batched_over_one_at_a_time": project["warm_ms_per_image"] / (seconds["batched_warm"] * 1000)}


def run(voc_root: Path, prepared: Path, samples: list, settings, device: torch.device) -> tuple[dict, dict]:
    """Every comparison under `settings` (a `bench.Settings`): ({comparison: {case: ratio}} or {comparison: ratio},
    the same shape with the measurements behind each ratio)."""
    recipe = TrainParams(crop_size=list(settings.crop_size), batch_size=settings.batch_size, device=str(device))
    ratios: dict = {}
    details: dict = {}

    def record(comparison: str, case: str | None, row: dict, value: float | None = None) -> None:
        value = row["ratio"] if value is None else value
        log.info("%s%s: %.3g", comparison, "" if case is None else f" {case}", value)
        if case is None:
            ratios[comparison], details[comparison] = value, row
        else:
            ratios.setdefault(comparison, {})[case] = value
            details.setdefault(comparison, {})[case] = row

    for workers in settings.loader_workers:
        record("loader_project_over_torchvision", f"workers={workers}",
               compare_loader(voc_root, prepared, recipe, device, workers, settings.loader_budget_s, settings.seed))
    for name, (architecture, options) in settings.variants.items():
        row = compare_train_step(samples, architecture, options, recipe, device, settings.warmup_steps,
                                 settings.min_steps, settings.seed)
        record("train_step_project_over_plain_fp32", name, row)
        if row.get("flop_utilisation") is not None:
            record("flop_utilisation", name, row, row["flop_utilisation"])
        if device.type == "cuda":
            row = compare_evaluate(architecture, options, settings.comparison_eval_images, device, settings.seed)
            record("evaluate_project_over_autotuned", name, row)
            record("evaluate_batched_over_one_at_a_time", name, row, row["batched_over_one_at_a_time"])
            record("evaluate_batched_differing_pixels", name, row, row["differing_pixels"])
        if device.type == "cuda" and name in settings.compile_variants:
            record("train_step_compiled_over_eager", name,
                   compare_compile(samples, architecture, options, recipe, device, settings.min_steps, settings.seed))
    record("confusion_bincount_over_torchmetrics", None,
           compare_confusion(settings.eval_size, settings.confusion_images, device, settings.min_steps, settings.seed))
    return ratios, details
