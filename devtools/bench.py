"""Throughput of the pipeline's hot paths on generated data, and the targets that fail `make bench` on a regression.

Four measurements, each returning plain (JSON-ready) dicts:
  prepare   `pipeline.ingest.prepare.prepare` on ~100 generated pairs of real VOC sizes (300–500 px): images/s, with one
            process and with one per core (`prepare.workers: 0`)
  loader    `PreparedSplit` read back through a DataLoader built as the training loop builds it (collate_samples,
            batches of 8): samples/s with 0 and 2 workers, steady state (workers started once, page cache warm)
  train     `pipeline.training.optimization.train_step`, the training loop's own step, with `make_optimizer` and the
            default (SGD) TrainParams under the runtime policy training uses (`pipeline.core.runtime.resolve`);
            img/s = batch / median step time over the timed steps that follow the warm-up steps
  evaluate  `pipeline.evaluation.predict.predict` on one 375×500 image at a time (VOC's most common size), under the
            runtime policy the evaluate stage uses: img/s = 1 / median image time, and peak memory

Then `comparisons` (devtools/comparisons.py): the same paths against what a user would otherwise run, as
ratios measured side by side in the same run; on the CPU, where onnxruntime is installed, `onnxruntime`: each
evaluation row's network exported as the export stage exports it and run by ONNX Runtime on the same image.

Step counts adapt to the machine: timed steps run until `budget_s` seconds are spent, at least `min_steps` and
at most `max_steps` of them, so a fast model is timed over many steps and a slow one (U-Net width 64, DeepLab
ResNet-50 on a CPU) over `min_steps` without blowing the run's time.

Peak memory (`peak_memory_mb`) is the extra memory at the peak of a measurement over its start, model included:
on CUDA `torch.cuda.max_memory_allocated` − `memory_allocated` (tensors only, not the caching allocator's
reserve); on the CPU the process's resident-set high-water mark (VmHWM) − its resident set at the start, after
glibc's `malloc_trim` has returned the free heap pages and the high-water mark has been reset through
/proc/self/clear_refs (Linux); it counts everything the process touches, oneDNN scratch included. Where either
is unavailable it falls back to the growth of `ru_maxrss`, a lower bound (0 when an earlier measurement peaked
higher); `memory_method` in the results says which was used.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import datetime
import gc
import importlib.metadata
import importlib.util
import io
import logging
import os
import platform
import re
import resource
import statistics
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from devtools import comparisons
from devtools.synthetic import write_voc_tar
from pipeline.core import runtime
from pipeline.core.labels import NUM_CLASSES, VOC_LABELS
from pipeline.core.params.export import ExportParams
from pipeline.core.params.train import TrainParams
from pipeline.evaluation.predict import predict
from pipeline.ingest.prepare import prepare
from pipeline.models.registry import build
from pipeline.prepared.dataset import PreparedSplit
from pipeline.training.augment import collate_samples
from pipeline.training.losses import make_loss
from pipeline.training.optimization import make_optimizer, train_step

log = logging.getLogger(__name__)

# Row name → (architecture, options for `build`). pretrained none throughout: no download, and the speed is the same.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "fcn32s": ("fcn", {"variant": "fcn32s", "pretrained": "none"}),
    "unet-16": ("unet", {"width": 16}),
    "unet-64": ("unet", {"width": 64}),
    # As params.yaml trains it (no auxiliary head) …
    "deeplab-mobilenet_v3_large": ("deeplab", {"backbone": "mobilenet_v3_large", "aux_loss": False,
                                               "pretrained": "none"}),
    # … and as torchvision's reference trains it (auxiliary head on layer3, weight 0.5).
    "deeplab-resnet50+aux": ("deeplab", {"backbone": "resnet50", "aux_loss": True, "pretrained": "none"}),
    # DeepLabV3+ as params.yaml trains it: output stride 16, auxiliary head on layer3.
    "deeplabv3plus-resnet50+aux": ("deeplabv3plus", {"backbone": "resnet50", "aux_loss": True, "pretrained": "none"}),
    # segmentation_models_pytorch's networks, the two the generic tests cover: a CNN and a transformer.
    "smp-unetplusplus-resnet18": ("smp", {"arch": "UnetPlusPlus", "encoder": "resnet18"}),
    "smp-segformer-mit_b0": ("smp", {"arch": "Segformer", "encoder": "mit_b0"}),
}


def available_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """VARIANTS less segmentation_models_pytorch's where it is not installed (the GPU machines lack it)."""
    has_smp = importlib.util.find_spec("segmentation_models_pytorch") is not None
    return {name: row for name, row in VARIANTS.items() if row[0] != "smp" or has_smp}


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts of one bench run; `CPU` and `CUDA` below are the two that `make bench` uses."""

    images: int = 100  # generated pairs, half train (loader, training batches) and half val
    image_size: tuple[int, int] = (300, 500)  # each side drawn in [min, max], like VOC's (mostly 500 × 281–500)
    seed: int = 0
    loader_workers: tuple[int, ...] = (0, 2)
    loader_budget_s: float = 1.0
    crop_size: tuple[int, int] = (128, 128)
    batch_size: int = 8
    warmup_steps: int = 1
    min_steps: int = 3
    max_steps: int = 10
    budget_s: float = 5.0  # timed seconds per model and measurement, roughly (min_steps wins for slow models)
    eval_size: tuple[int, int] = (375, 500)
    eval_warmup: int = 1
    variants: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=available_variants)
    confusion_images: int = 20  # predictions of eval_size accumulated per timed confusion-matrix pass
    comparison_eval_images: int = 60  # VOC-like sizes for the evaluation comparison (CUDA only)
    compile_variants: tuple[str, ...] = ()  # rows of `variants` whose step is also timed compiled (CUDA only)
    served_variant: str = "fcn32s"  # the row of `variants` served for the load test (CPU, where mlflow is)
    # Full-size photos through tools.predict's path in slide mode (params.yaml's window and stride), on the CPU:
    # a phone's 12 MP and a 48 MP sensor's, with the row of `variants` that predicts them.
    slide_photos: dict[str, tuple[int, int]] = field(default_factory=lambda: {"12MP": (3000, 4000),
                                                                              "48MP": (6000, 8000)})
    slide_variant: str = "fcn32s"
    serving_clients: int = 8
    serving_requests: int = 200


CPU = Settings()
# 480×480 is torchvision's reference crop; more warm-up steps for cudnn.benchmark's search.
# Every model's step is also timed compiled, so that one run says where compiling pays (params.yaml compiles only
# where it did).
CUDA = Settings(crop_size=(480, 480), warmup_steps=3, min_steps=5, max_steps=30, budget_s=3.0, eval_warmup=3,
                comparison_eval_images=48, compile_variants=tuple(available_variants()))

# What a run must reach, per metric path (keys joined by "/"): {"min": …} for a throughput, {"max": …} for memory.
# Set at about half of a run on an idle machine (its numbers in the comments; ceilings at about twice), so that
# noise passes and a real regression of a hot path fails. Host-side paths (prepare, loader) apply on every
# machine; the rest per device type. "host" and "cpu": a 2-core AMD EPYC VM, torch 2.14; "cuda": one NVIDIA H200,
# torch 2.11 (a different card or torch: rerun and compare before trusting a miss).


def _per_model(metric: str, bound: str, values: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"<section>/<model>/<name>": bound} for "<section>/<name>"; {"comparisons/<comparison>/<model>": …} for a
    comparison."""
    section, name = metric.split("/")
    if section == "comparisons":
        return {f"{section}/{name}/{model}": {bound: value} for model, value in values.items()}
    return {f"{section}/{model}/{name}": {bound: value} for model, value in values.items()}


TARGETS: dict[str, dict[str, dict[str, float]]] = {
    "host": {
        "prepare/workers=1/images_per_second": {"min": 150},  # 329
        "prepare/workers=0/images_per_second": {"min": 150},  # 307 with 2 processes
        "loader/workers=0/samples_per_second": {"min": 15000},  # 33,900
        "loader/workers=2/samples_per_second": {"min": 500},  # 1,100
    },
    "cpu": {
        # measured 53.6, 48.7, 4.7, 38.0 and 5.3 img/s
        **_per_model("train/images_per_second", "min", {
            "fcn32s": 25, "unet-16": 24, "unet-64": 2.3, "deeplab-mobilenet_v3_large": 18,
            "deeplab-resnet50+aux": 2.5, "deeplabv3plus-resnet50+aux": 3.5,  # V3+: 7.2 (2-core Xeon, 2026-12-04)
            # measured 7.06 and 35.6 img/s (2-core AMD EPYC, 2026-12-08; FCN-32s 36.0 in the same run)
            "smp-unetplusplus-resnet18": 3.5, "smp-segformer-mit_b0": 17}),
        # measured 13.7, 12.0, 1.09, 14.2 and 1.66 img/s
        **_per_model("evaluate/images_per_second", "min", {
            "fcn32s": 6.5, "unet-16": 6, "unet-64": 0.5, "deeplab-mobilenet_v3_large": 7, "deeplab-resnet50+aux": 0.8,
            "deeplabv3plus-resnet50+aux": 1.3,  # V3+: 2.74
            "smp-unetplusplus-resnet18": 0.8, "smp-segformer-mit_b0": 2.5}),  # measured 1.68 and 5.14
        # measured 172, 249, 706, 194 and 452 MB
        **_per_model("evaluate/peak_memory_mb", "max", {
            "fcn32s": 350, "unet-16": 500, "unet-64": 1400, "deeplab-mobilenet_v3_large": 400,
            "deeplab-resnet50+aux": 900, "deeplabv3plus-resnet50+aux": 1100,  # V3+: 536
            "smp-unetplusplus-resnet18": 1200, "smp-segformer-mit_b0": 800}),  # measured 595 and 411 MB
        # Side by side (devtools/comparisons.py), ratios of the project over the alternative. Measured
        # 2.42 and 0.67 (the project's augmentation runs in the main process on the training device, so on a CPU two
        # torchvision workers, which decode and augment in parallel, beat it: train.workers stays 0 on the CPU),
        # 1.00, 0.92, 1.00, 1.00, 0.99 (the same fp32 step plus the augmentation) and 0.91.
        "comparisons/loader_project_over_torchvision/workers=0": {"min": 1.2},
        "comparisons/loader_project_over_torchvision/workers=2": {"min": 0.33},
        **_per_model("comparisons/train_step_project_over_plain_fp32", "min", dict.fromkeys(VARIANTS, 0.5)),
        "comparisons/confusion_bincount_over_torchmetrics": {"min": 0.45},
        # The loader must outrun the step (it does by hundreds of times on the CPU).
        **_per_model("comparisons/loader_over_train_step", "min", dict.fromkeys(VARIANTS, 1.0)),
        # ONNX Runtime 1.31 over PyTorch on one 375×500 image, measured 0.63, 0.81, 1.23, 0.79, 1.05 and 0.96 (2-core
        # Intel Xeon, 2026-12-04): a regression of the export's graph or of ORT's session settings shows here.
        # Large photos in slide mode (tools.predict's work, FCN-32s, 512×512 windows every 341 px), measured on a
        # 2-core AMD EPYC, 2026-12-08: PyTorch 30.5 s and 104 s, ONNX Runtime 26.7 s and 95.2 s for 12 and 48 MP;
        # extra memory 694 / 1,388 MB and 1,229 / 1,394 MB. Ceilings at about twice the time and 1.5 times the memory.
        **{f"slide/{runtime_name}/{photo}/seconds": {"max": limit} for runtime_name, limits in (
            ("torch", {"12MP": 60, "48MP": 210}), ("onnxruntime", {"12MP": 55, "48MP": 190}))
           for photo, limit in limits.items()},
        **{f"slide/{runtime_name}/{photo}/peak_memory_mb": {"max": limit} for runtime_name in ("torch", "onnxruntime")
           for photo, limit in (("12MP", 1850), ("48MP", 2100))},
        # Every answer of the load test must be tools.predict's mask; measured 5.9 requests/s while other work ran.
        "serving/load/correct_share": {"min": 1.0},
        "serving/load/requests_per_second": {"min": 2.5},
        **_per_model("comparisons/onnxruntime_over_pytorch", "min", {
            "fcn32s": 0.3, "unet-16": 0.4, "unet-64": 0.6, "deeplab-mobilenet_v3_large": 0.4,
            "deeplab-resnet50+aux": 0.5, "deeplabv3plus-resnet50+aux": 0.5,
            # measured 1.16 and 1.23 (2-core AMD EPYC, 2026-12-08)
            "smp-unetplusplus-resnet18": 0.55, "smp-segformer-mit_b0": 0.6}),
    },
    # Half of what two NVIDIA H200 sessions measured (torch 2.11, cuDNN 9.19; 2026-11-26 and -27). The first:
    # every train and evaluate row, step ratios FCN-32s 1.18, U-Net-16 1.96, U-Net-64 2.09, FLOP utilisation
    # 3.4 %, 2.5 %, 18.7 %. The second: DeepLab R50 (step 1.73×, 16.3 %), MobileNetV3 (1.01×, 4.5 %), and the
    # evaluation comparison, cold, over the landed path: FCN-32s 62×, U-Net-64 45×, R50 28× (16 images each),
    # MobileNetV3 52× (48 images; in fp32 NCHW, the evaluate stage's policy for it). U-Net-16's evaluation was not
    # measured that way: its target is issue #12's goal, 5×. Compiled over eager, R50: half of the H100's 1.22×.
    "cuda": {
        # measured 689, 499, 210, 227 and 181 img/s (crop 480×480, batch 8)
        **_per_model("train/images_per_second", "min", {
            "fcn32s": 345, "unet-16": 250, "unet-64": 105, "deeplab-mobilenet_v3_large": 113,
            "deeplab-resnet50+aux": 90}),
        # measured 461, 416, 347, 154 (bf16 channels-last; the stage now predicts it in fp32 NCHW, 5.4 ms an image
        # of VOC's sizes, warm) and 181 img/s (one 375×500 image at a time, warm)
        **_per_model("evaluate/images_per_second", "min", {
            "fcn32s": 230, "unet-16": 208, "unet-64": 173, "deeplab-mobilenet_v3_large": 77,
            "deeplab-resnet50+aux": 90}),
        **_per_model("comparisons/train_step_project_over_plain_fp32", "min", {
            "deeplab-resnet50+aux": 0.87, "unet-16": 0.98, "unet-64": 1.05, "fcn32s": 0.59,
            "deeplab-mobilenet_v3_large": 0.5}),
        **_per_model("comparisons/flop_utilisation", "min", {
            "deeplab-resnet50+aux": 0.08, "unet-16": 0.012, "unet-64": 0.093, "fcn32s": 0.017,
            "deeplab-mobilenet_v3_large": 0.022}),
        **_per_model("comparisons/evaluate_project_over_autotuned", "min", {
            "fcn32s": 30, "unet-16": 5, "unet-64": 22, "deeplab-mobilenet_v3_large": 25, "deeplab-resnet50+aux": 14}),
        # Only where params.yaml compiles (DeepLab R50): FCN-32s and U-Net-64 measured 0.82 and 0.96, not a target.
        "comparisons/train_step_compiled_over_eager/deeplab-resnet50+aux": {"min": 0.61},
        # Fed at the step's rate: the loader (0 or 2 workers, whichever is faster) must outrun every model's step
        # (segmentation_models_pytorch's rows excepted: the GPU machines lack the library).
        **_per_model("comparisons/loader_over_train_step", "min",
                     {name: 1.0 for name, (architecture, _) in VARIANTS.items() if architecture != "smp"}),
    },
}


def settings_for(device: torch.device) -> Settings:
    return CUDA if device.type == "cuda" else CPU


def targets_for(device: torch.device) -> dict[str, dict[str, float]]:
    return {**TARGETS["host"], **TARGETS.get(device.type, {})}


# --- the measurements ---------------------------------------------------------------------------------------

def generated_voc(workdir: Path, settings: Settings) -> Path:
    """Write a generated VOC tar into `workdir`, extract it there, and return the directory holding VOCdevkit."""
    tar_path = workdir / "VOCtrainval-bench.tar"
    n_train = max(1, settings.images // 2)
    write_voc_tar(tar_path, seed=settings.seed, n_train=n_train, n_val=max(1, settings.images - n_train),
                  min_size=settings.image_size[0], max_size=settings.image_size[1])
    root = workdir / "voc"
    with tarfile.open(tar_path) as tar:
        tar.extractall(root, filter="data")
    return root


def bench_prepare(voc_root: Path, out_dir: Path, workers: int) -> dict:
    """Time one full `prepare` (header checks, decoding, packing, statistics, sha256) of both splits."""
    started = time.perf_counter()
    stats = prepare(voc_root, out_dir, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    images = sum(split["images"] for split in stats.values())
    return {"images": images, "processes": workers or os.cpu_count() or 1, "seconds": _round(seconds),
            "images_per_second": _round(images / seconds)}


def bench_loader(prepared: Path, workers: int, settings: Settings) -> dict:
    """Read the train split through a DataLoader as the training loop does; a first (untimed) pass starts the
    workers, then whole passes are timed until `loader_budget_s` is spent (at least 2). Without pin_memory
    (which the loop adds on CUDA), so that the number, and its target, mean the same on every machine."""
    dataset = PreparedSplit(prepared, "train")
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, collate_fn=collate_samples,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(settings.seed))
    started = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first_batch = time.perf_counter() - started
    for _ in iterator:
        pass
    samples, passes, started = 0, 0, time.perf_counter()
    while passes < 2 or time.perf_counter() - started < settings.loader_budget_s:
        for batch in loader:
            samples += len(batch)
        passes += 1
    seconds = time.perf_counter() - started
    del iterator, loader  # stops the persistent workers
    return {"workers": workers, "samples": samples, "passes": passes, "seconds": _round(seconds),
            "first_batch_seconds": _round(first_batch), "samples_per_second": _round(samples / seconds)}


def train_config(settings: Settings, device: torch.device) -> TrainParams:
    """params.yaml's shared recipe (SGD, lr 0.01, momentum 0.9, scale 0.5–2, flip, channels_last, bf16 autocast on
    CUDA: TrainParams' defaults) with the bench's crop and batch size."""
    return dataclasses.replace(TrainParams(), crop_size=list(settings.crop_size), batch_size=settings.batch_size,
                               device=str(device))


def bench_train(samples: list, name: str, settings: Settings, device: torch.device) -> dict:
    """Training throughput of variant `name` on `samples` (decoded (image, label) pairs, cycled in order)."""
    architecture, options = settings.variants[name]
    recipe = train_config(settings, device)
    policy = runtime.resolve(device, amp=recipe.amp, channels_last=recipe.channels_last, training=True)
    torch.manual_seed(settings.seed)
    with _PeakMemory(device) as memory:
        net = policy.place_model(build(architecture, num_classes=NUM_CLASSES, **options)).train()
        optimizer = make_optimizer(net, recipe)
        loss = make_loss(recipe, NUM_CLASSES)
        batches = _cycle(samples, recipe.batch_size)

        def step() -> None:
            train_step(net, next(batches), optimizer, recipe, policy, loss)
            policy.synchronize()

        times = _timed(step, settings.warmup_steps, settings.min_steps, settings.max_steps, settings.budget_s)
        parameters = sum(p.numel() for p in net.parameters())
    median = statistics.median(times)
    return {"architecture": architecture, "options": options, "parameters": parameters,
            "crop_size": list(recipe.crop_size), "batch_size": recipe.batch_size,
            "amp": policy.autocast_dtype is not None, "channels_last": policy.channels_last,
            "warmup_steps": settings.warmup_steps, "steps": len(times), "median_step_seconds": _round(median),
            "images_per_second": _round(recipe.batch_size / median), **memory.result}


def eval_image(settings: Settings) -> torch.Tensor:
    """The uint8 3×H×W image every evaluation row predicts, the same for PyTorch and ONNX Runtime."""
    return torch.randint(0, 256, (3, *settings.eval_size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(settings.seed))


def bench_evaluate(name: str, settings: Settings, device: torch.device) -> dict:
    """Full-resolution inference of variant `name` on one image at a time through `predict`."""
    architecture, options = settings.variants[name]
    torch.manual_seed(settings.seed)
    image = eval_image(settings).to(device)
    with _PeakMemory(device) as memory:
        net = build(architecture, num_classes=NUM_CLASSES, **options).eval()
        policy = runtime.resolve(device, network=net)  # as the evaluate stage resolves it
        net = policy.place_model(net)

        def one() -> None:
            predict(net, image, policy)
            policy.synchronize()

        times = _timed(one, settings.eval_warmup, settings.min_steps, settings.max_steps, settings.budget_s)
    median = statistics.median(times)
    return {"architecture": architecture, "options": options, "size": list(settings.eval_size),
            "amp": policy.autocast_dtype is not None, "channels_last": policy.channels_last,
            "warmup_images": settings.eval_warmup, "images": len(times), "median_image_seconds": _round(median),
            "images_per_second": _round(1 / median), **memory.result}


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnxscript") is not None


def bench_onnxruntime(name: str, settings: Settings, workdir: Path) -> dict:
    """The evaluation row's network exported as the export stage exports it and run by ONNX Runtime on the CPU,
    on the same image through the same `predict`."""
    from pipeline.export.onnx_export import export_onnx
    from pipeline.export.onnx_model import OnnxModel

    architecture, options = settings.variants[name]
    torch.manual_seed(settings.seed)
    image = eval_image(settings)
    path = workdir / f"{name}.onnx"
    started = time.perf_counter()
    export_onnx(build(architecture, num_classes=NUM_CLASSES, **options).eval(), path, ExportParams().opset)
    export_seconds = time.perf_counter() - started
    model = OnnxModel(path)
    policy = runtime.resolve("cpu", network=model)
    times = _timed(lambda: predict(model, image, policy), settings.eval_warmup, settings.min_steps,
                   settings.max_steps, settings.budget_s)
    path.unlink()
    median = statistics.median(times)
    return {"size": list(settings.eval_size), "export_seconds": _round(export_seconds), "images": len(times),
            "median_image_seconds": _round(median), "images_per_second": _round(1 / median),
            "onnxruntime": importlib.metadata.version("onnxruntime")}


def large_photo(path: Path, height: int, width: int, seed: int) -> None:
    """A smooth generated photo of height × width as a JPEG (quality 90), made at 1/8 of the size and scaled up,
    so that writing it never holds more than the final image."""
    generator = np.random.default_rng(seed)
    small = generator.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    PILImage.fromarray(small).resize((width, height), PILImage.Resampling.BILINEAR).save(path, quality=90)


def bench_slide(settings: Settings, workdir: Path, *, onnx: bool) -> dict:
    """`tools.predict`'s work on each of `slide_photos` (decode at full size, slide-mode prediction, the mask's
    and the overlay's PNGs) with the `slide_variant` network, in PyTorch or exported and run by ONNX Runtime:
    seconds and peak memory, the extra over the start and the whole process's."""
    from pipeline.core.params.inference import InferenceParams
    from pipeline.serving.predict_files import segment_files

    architecture, options = settings.variants[settings.slide_variant]
    torch.manual_seed(settings.seed)
    model = build(architecture, num_classes=NUM_CLASSES, **options).eval()
    if onnx:
        from pipeline.export.onnx_export import export_onnx
        from pipeline.export.onnx_model import OnnxModel

        export_onnx(model, workdir / "slide.onnx", ExportParams().opset)
        model = OnnxModel(workdir / "slide.onnx")
    policy = runtime.resolve("cpu", network=model)
    inference = InferenceParams(mode="slide")
    rows: dict[str, Any] = {"model": settings.slide_variant, "crop_size": inference.crop_size,
                            "stride": inference.stride}
    for label, (height, width) in settings.slide_photos.items():
        photo = workdir / f"{label}.jpg"
        large_photo(photo, height, width, settings.seed)
        with _PeakMemory(torch.device("cpu")) as memory:
            started = time.perf_counter()
            failures = segment_files(model, [photo], workdir / "slide", policy, labels=VOC_LABELS,
                                     max_pixels=height * width, inference=inference)
            seconds = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"slide bench: {failures}")
        with PILImage.open(workdir / "slide" / f"{label}.png") as mask:
            if mask.size != (width, height):
                raise RuntimeError(f"slide bench: a {mask.size} mask for a {width}×{height} photo")
        process_peak = _proc_status_kb("VmHWM") / 1024 if Path("/proc/self/status").exists() else None
        rows[label] = {"size": [height, width], "seconds": _round(seconds), **memory.result,
                       "process_peak_memory_mb": _round(process_peak) if process_peak else None}
        photo.unlink()
    return rows


def bench_serving(workdir: Path, settings: Settings) -> dict:
    """`mlflow models serve` of a served model directory (`save_served_model`, the default `serving` limits) on a
    free loopback port, loaded by `serving_clients` threads with `serving_requests` one-row requests of VOC-sized
    JPEGs; every answer checked against the mask the same code computes in this process."""
    from devtools import serving_load
    from pipeline.core.params.serving import ServingParams
    from pipeline.models.registry import typed_options
    from pipeline.models.saved import load_model, save_model
    from pipeline.serving.package import save_served_model
    from pipeline.serving.service import segment_encoded

    architecture, options = settings.variants[settings.served_variant]
    torch.manual_seed(settings.seed)
    save_model(workdir / "served.pt", build(architecture, num_classes=NUM_CLASSES, **options),
               architecture=architecture, options=typed_options(architecture, options), labels=VOC_LABELS)
    save_served_model(workdir / "served.pt", workdir / "served", limits=ServingParams())
    rng = torch.Generator().manual_seed(settings.seed)
    images = []
    for height, width in ((375, 500), (500, 333), (281, 500), (500, 375)):
        pixels = torch.randint(0, 256, (height // 25, width // 25, 3), dtype=torch.uint8, generator=rng).numpy()
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).resize((width, height), PILImage.Resampling.BILINEAR).save(buffer, format="JPEG")
        images.append(buffer.getvalue())
    model = load_model(workdir / "served.pt").eval()
    policy = runtime.resolve("cpu", network=model)
    masks = [base64.b64decode(segment_encoded(model, policy, [base64.b64encode(image).decode()],
                                              labels=VOC_LABELS)[0]) for image in images]
    with serving_load.served(workdir / "served", workdir) as url:
        load = serving_load.run(url, images, masks, clients=settings.serving_clients,
                                requests=settings.serving_requests)
    return {"model": settings.served_variant, "sizes": [[375, 500], [500, 333], [281, 500], [500, 375]], **load,
            "correct_share": load["correct"] / load["requests"]}


def run(workdir: Path, device: torch.device, settings: Settings | None = None) -> dict:
    """Every measurement on `device`, with generated data written under `workdir`; the results as one dict."""
    settings = settings or settings_for(device)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    results: dict[str, Any] = {"device": describe(device), "settings": _jsonable(dataclasses.asdict(settings)),
                               "date": datetime.date.today().isoformat(), "seconds": timings}
    log.info("generating %d images of %d–%d px", settings.images, *settings.image_size)
    voc_root = generated_voc(workdir, settings)
    prepared = workdir / "prepared"
    results["prepare"] = {}
    for workers in (1, 0):  # one process, then one per core (prepare.workers: 0, the default)
        results["prepare"][f"workers={workers}"] = bench_prepare(voc_root, prepared, workers)
        log.info("prepare, workers=%d: %s images/s", workers,
                 results["prepare"][f"workers={workers}"]["images_per_second"])
    results["loader"] = {}
    for workers in settings.loader_workers:
        results["loader"][f"workers={workers}"] = bench_loader(prepared, workers, settings)
        log.info("loader, workers=%d: %s samples/s", workers,
                 results["loader"][f"workers={workers}"]["samples_per_second"])
    timings["prepare and loader"] = _round(time.perf_counter() - started)
    samples = list(PreparedSplit(prepared, "train"))
    if device.type == "cuda":  # the training loop's DataLoader pins its batches (pin_memory on CUDA)
        samples = [(image.pin_memory(), label.pin_memory()) for image, label in samples]
    results["train"], results["evaluate"] = {}, {}
    for name in settings.variants:
        results["train"][name] = bench_train(samples, name, settings, device)
        log.info("train %s: %s img/s", name, results["train"][name]["images_per_second"])
        results["evaluate"][name] = bench_evaluate(name, settings, device)
        log.info("evaluate %s: %s img/s", name, results["evaluate"][name]["images_per_second"])
    timings["train and evaluate"] = _round(time.perf_counter() - started - sum(timings.values()))
    ratios, details = comparisons.run(voc_root, prepared, samples, settings, device)
    if device.type == "cpu" and onnxruntime_available():  # the GPU machines have no onnxruntime
        results["onnxruntime"] = {}
        for name in settings.variants:
            results["onnxruntime"][name] = bench_onnxruntime(name, settings, workdir)
            log.info("onnxruntime %s: %s img/s", name, results["onnxruntime"][name]["images_per_second"])
        ratios["onnxruntime_over_pytorch"] = {name: row["images_per_second"] / results["evaluate"][name][
            "images_per_second"] for name, row in results["onnxruntime"].items()}
    if device.type == "cpu":
        results["slide"] = {"torch": bench_slide(settings, workdir, onnx=False)}
        if onnxruntime_available():
            results["slide"]["onnxruntime"] = bench_slide(settings, workdir, onnx=True)
        log.info("slide: %s", results["slide"])
    if device.type == "cpu" and importlib.util.find_spec("mlflow") is not None:  # the GPU machines have no mlflow
        results["serving"] = {"load": bench_serving(workdir, settings)}
        log.info("serving: %s", results["serving"]["load"])
    # Can the loader feed the step? Its best samples/s over the step's img/s: below 1, training waits for data.
    loader = max(row["samples_per_second"] for row in results["loader"].values())
    ratios["loader_over_train_step"] = {name: loader / row["images_per_second"]
                                        for name, row in results["train"].items()}
    results["comparisons"] = _rounded(ratios)
    results["comparison_details"] = _jsonable(details)
    log.info("comparisons: %s", results["comparisons"])
    timings["comparisons"] = _round(time.perf_counter() - started - sum(timings.values()))
    timings["total"] = _round(time.perf_counter() - started)
    return results


def describe(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{_cpu_model()}, {torch.get_num_threads()} threads"
    return {"type": device.type, "name": name, "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}


# --- targets ------------------------------------------------------------------------------------------------

def metric(results: dict, path: str) -> Any:
    """The value at "section/key/…/name" in `results`, or None where there is none."""
    value: Any = results
    for key in path.split("/"):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def check(results: dict, targets: dict[str, dict[str, float]]) -> list[str]:
    """One line per missed target (a metric below its "min", above its "max", or not measured at all)."""
    missed = []
    for path, target in targets.items():
        value = metric(results, path)
        if not isinstance(value, (int, float)):
            missed.append(f"{path}: not measured (target {_target_text(target)})")
        elif "min" in target and value < target["min"] or "max" in target and value > target["max"]:
            missed.append(f"{path}: {value:g}, target {_target_text(target)}")
    return missed


def _target_text(target: dict[str, float]) -> str:
    return " and ".join(f"{'≥' if bound == 'min' else '≤'} {value:g}" for bound, value in target.items())


# --- the report ---------------------------------------------------------------------------------------------

def _precision(row: dict) -> str:
    return ("bf16 autocast" if row["amp"] else "fp32") + (", channels_last" if row["channels_last"] else "")


def markdown(results: dict, targets: dict[str, dict[str, float]]) -> str:
    """The results as one markdown table per section, each titled with the device and torch version."""
    device = results["device"]
    on = f"{device['name']}, torch {device['torch']}"
    host = f"{device['cpu']}, {device['cpu_count']} cores, torch {device['torch']}"
    settings = results["settings"]

    def target(path: str) -> str:
        return _target_text(targets[path]) if path in targets else "–"

    images = next(iter(results["prepare"].values()))["images"]
    out = [f"**prepare**: {images} generated images, sides {settings['image_size'][0]}–{settings['image_size'][1]} px "
           f"({host})", "",
           "| processes | images/s | seconds | target |", "|---:|---:|---:|---|"]
    for key, row in results["prepare"].items():
        out.append(f"| {row['processes']} | {row['images_per_second']:.1f} | {row['seconds']:.2f} | "
                   f"{target(f'prepare/{key}/images_per_second')} |")
    out += ["", f"**PreparedSplit through a DataLoader**: train split, batches of {settings['batch_size']}, "
            f"steady state ({host})", "", "| workers | samples/s | first batch (s) | target |", "|---:|---:|---:|---|"]
    for key, row in results["loader"].items():
        out.append(f"| {row['workers']} | {row['samples_per_second']:.0f} | {row['first_batch_seconds']:.3f} | "
                   f"{target(f'loader/{key}/samples_per_second')} |")
    first = next(iter(results["train"].values()), None)
    if first is not None:
        precision = _precision(first)
        out += ["", f"**training step**: crop {first['crop_size'][0]}×{first['crop_size'][1]}, batch "
                f"{first['batch_size']}, SGD, {precision}, pretrained none ({on})", "",
                "| model | parameters | img/s | median step (s) | timed steps | peak memory (MB) | target img/s |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for name, row in results["train"].items():
            out.append(f"| {name} | {row['parameters'] / 1e6:.1f} M | {row['images_per_second']:.1f} | "
                       f"{row['median_step_seconds']:.3f} | {row['steps']} | {row['peak_memory_mb']:.0f} | "
                       f"{target(f'train/{name}/images_per_second')} |")
    first = next(iter(results["evaluate"].values()), None)
    if first is not None:
        out += ["", f"**evaluation**: `predict`, one {first['size'][0]}×{first['size'][1]} image at a time, "
                f"under the evaluate stage's policy for each network ({on})", "",
                "| model | precision | img/s | median image (s) | timed images | peak memory (MB) | target img/s "
                "| target MB |", "|---|---|---:|---:|---:|---:|---|---|"]
        for name, row in results["evaluate"].items():
            out.append(f"| {name} | {_precision(row)} | {row['images_per_second']:.2f} | "
                       f"{row['median_image_seconds']:.3f} | "
                       f"{row['images']} | {row['peak_memory_mb']:.0f} | "
                       f"{target(f'evaluate/{name}/images_per_second')} | "
                       f"{target(f'evaluate/{name}/peak_memory_mb')} |")
        out += ["", f"Peak memory: the extra memory at the peak over the measurement's start, model included "
                f"({first['memory_method']})."]
    if results.get("onnxruntime"):
        first = next(iter(results["onnxruntime"].values()))
        out += ["", f"**ONNX Runtime** {first['onnxruntime']}: the same image through `predict`, the network exported "
                f"as `export@<model>` exports it, on the CPU, beside PyTorch's evaluation row ({host})", "",
                "| model | ONNX Runtime img/s | median image (s) | PyTorch img/s | export (s) |",
                "|---|---:|---:|---:|---:|"]
        for name, row in results["onnxruntime"].items():
            out.append(f"| {name} | {row['images_per_second']:.2f} | {row['median_image_seconds']:.3f} | "
                       f"{results['evaluate'][name]['images_per_second']:.2f} | {row['export_seconds']:.1f} |")
    if results.get("slide"):
        first = results["slide"]["torch"]
        out += ["", f"**large photos in slide mode**: `tools.predict`'s work (full-size decode, {first['model']} over "
                f"{first['crop_size'][0]}×{first['crop_size'][1]} windows every {first['stride'][0]} px, the mask's "
                f"and the overlay's PNGs), untrained weights ({host})", "",
                "| runtime | photo | seconds | peak memory (MB) | process peak (MB) | target s | target process MB |",
                "|---|---|---:|---:|---:|---|---|"]
        for runtime_name, rows in results["slide"].items():
            for label, row in rows.items():
                if isinstance(row, dict):
                    out.append(f"| {runtime_name} | {label} ({row['size'][1]}×{row['size'][0]}) | "
                               f"{row['seconds']:.1f} | {row['peak_memory_mb']:.0f} | "
                               f"{row['process_peak_memory_mb'] or 0:.0f} | "
                               f"{target(f'slide/{runtime_name}/{label}/seconds')} | "
                               f"{target(f'slide/{runtime_name}/{label}/process_peak_memory_mb')} |")
    if results.get("serving"):
        row = results["serving"]["load"]
        out += ["", f"**served model under load**: `mlflow models serve` of {row['model']} (untrained weights, "
                f"params.yaml's limits) on 127.0.0.1, {row['clients']} clients sending {row['requests']} one-image "
                f"requests of VOC-sized JPEGs, every answer checked against `tools.predict`'s mask ({host})", "",
                "| correct | requests/s | p50 latency (ms) | p95 latency (ms) | target requests/s |",
                "|---:|---:|---:|---:|---|",
                f"| {row['correct']} / {row['requests']} | {row['requests_per_second']:.1f} | {row['p50_ms']:.0f} | "
                f"{row['p95_ms']:.0f} | {target('serving/load/requests_per_second')} |"]
    if results.get("comparisons"):
        out += ["", f"**side by side**: the project over what a user would otherwise run, same data, same run "
                f"(above 1: the project is faster; {on})", "", "| comparison | case | ratio | target |",
                "|---|---|---:|---|"]
        for comparison, value in results["comparisons"].items():
            cases = value.items() if isinstance(value, dict) else [("–", value)]
            for case, ratio in cases:
                path = f"comparisons/{comparison}" + ("" if case == "–" else f"/{case}")
                out.append(f"| {comparison} | {case} | {ratio:.3g} | {target(path)} |")
    return "\n".join(out)


# --- helpers ------------------------------------------------------------------------------------------------

def _timed(fn: Callable[[], None], warmup: int, min_runs: int, max_runs: int, budget_s: float) -> list[float]:
    """Seconds of each timed call of `fn` after `warmup` untimed ones: calls go on until `budget_s` is spent,
    at least `min_runs` and at most `max_runs` of them."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < max(min_runs, 1) or (len(times) < max_runs and sum(times) < budget_s):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _cycle(samples: list, batch_size: int):
    i = 0
    while True:
        yield [samples[(i + j) % len(samples)] for j in range(batch_size)]
        i += batch_size


class _PeakMemory:
    """Peak extra memory over the `with` block (see the module docstring); `result` holds it after the block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: dict[str, Any] = {}

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.peak, self.method = self._cuda_peak, "torch.cuda.max_memory_allocated − memory_allocated at start"
        elif _trim_heap() and _reset_rss_peak():
            self.start = _proc_status_kb("VmRSS") * 1024
            self.peak, self.method = (lambda: _proc_status_kb("VmHWM") * 1024,
                                      "process VmHWM − VmRSS at start, after malloc_trim and a VmHWM reset")
        else:
            self.start = _ru_maxrss_bytes()
            self.peak, self.method = _ru_maxrss_bytes, "growth of ru_maxrss (a lower bound)"
        return self

    def _cuda_peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def __exit__(self, *exc) -> None:
        peak = self.peak()
        self.result = {"peak_memory_mb": _round(max(peak - self.start, 0) / 2**20), "memory_method": self.method}
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _trim_heap() -> bool:
    """Hand the heap's free pages back to the OS (glibc `malloc_trim`), so that memory freed by an earlier
    measurement is counted again when this one touches it; without it the resident set does not grow when
    freed blocks are reused, and a later model shows next to no memory. False where there is no glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _reset_rss_peak() -> bool:
    """Reset this process's resident-set high-water mark (Linux ≥ 4.0: "5" to clear_refs); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status_kb("VmHWM")
        return True
    except (OSError, ValueError):
        return False


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        found = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if found is None:
        raise ValueError(f"/proc/self/status has no {key}")
    return int(found.group(1))


def _ru_maxrss_bytes() -> int:
    # kilobytes on Linux, bytes on macOS
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if found:
            return found.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _rounded(value: Any) -> Any:
    return {k: _rounded(v) for k, v in value.items()} if isinstance(value, dict) else _round(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
