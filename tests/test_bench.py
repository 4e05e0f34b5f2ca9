"""devtools.bench at toy sizes: the structure of its results, the target check, and the stage's exit status.
Timings themselves are not checked: they depend on the machine."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from devtools import bench
from pipeline.prepared.dataset import PreparedSplit

TINY = bench.Settings(images=6, image_size=(40, 56), loader_workers=(0, 2), loader_budget_s=0.0, crop_size=(32, 32),
                      batch_size=2, warmup_steps=1, min_steps=1, max_steps=1, budget_s=0.0, eval_size=(40, 48),
                      eval_warmup=0, variants={"unet-4": ("unet", {"width": 4})}, served_variant="unet-4",
                      serving_requests=16, slide_photos={"small": (600, 700)}, slide_variant="unet-4")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return bench.run(tmp_path_factory.mktemp("bench"), torch.device("cpu"), TINY)


def test_results_have_every_measurement(results):
    assert results["device"]["type"] == "cpu" and results["device"]["torch"] == torch.__version__
    assert set(results["prepare"]) == {"workers=1", "workers=0"}
    assert all(row["images"] == 6 and row["images_per_second"] > 0 for row in results["prepare"].values())
    assert set(results["loader"]) == {"workers=0", "workers=2"}
    for row in results["loader"].values():
        assert row["passes"] >= 2 and row["samples"] == 3 * row["passes"] and row["samples_per_second"] > 0
    train, evaluate = results["train"]["unet-4"], results["evaluate"]["unet-4"]
    assert train["steps"] == 1 and train["batch_size"] == 2 and train["crop_size"] == [32, 32]
    assert train["images_per_second"] > 0 and not train["amp"] and train["channels_last"]
    assert evaluate["images"] == 1 and evaluate["size"] == [40, 48] and evaluate["images_per_second"] > 0
    assert train["peak_memory_mb"] >= 0 and evaluate["memory_method"]
    for runtime_name in ("torch", "onnxruntime"):
        row = results["slide"][runtime_name]["small"]
        assert row["size"] == [600, 700] and row["seconds"] > 0 and row["process_peak_memory_mb"] > 0
    json.dumps(results, allow_nan=False)  # plain data, as written to bench/results.json

    table = bench.markdown(results, {"loader/workers=0/samples_per_second": {"min": 500}})
    assert "| unet-4 |" in table and "≥ 500" in table and torch.__version__ in table
    assert "| onnxruntime | small (700×600) |" in table


def test_check_flags_a_planted_slow_number_and_a_missing_one(results):
    targets = {"loader/workers=0/samples_per_second": {"min": 1e-6}, "evaluate/unet-4/peak_memory_mb": {"max": 1e9}}
    assert bench.check(results, targets) == []

    slow = copy.deepcopy(results)
    slow["loader"]["workers=0"]["samples_per_second"] = 3.0
    slow["evaluate"]["unet-4"]["peak_memory_mb"] = 2e9
    assert bench.check(slow, {**targets, "loader/workers=0/samples_per_second": {"min": 500}}) == [
        "loader/workers=0/samples_per_second: 3, target ≥ 500",
        "evaluate/unet-4/peak_memory_mb: 2e+09, target ≤ 1e+09",
    ]
    assert bench.check(results, {"train/fcn32s/images_per_second": {"min": 1}}) == [
        "train/fcn32s/images_per_second: not measured (target ≥ 1)"]


def test_the_served_models_load_test_checks_every_answer(results):
    load = results["serving"]["load"]
    assert load["correct"] == load["requests"] == 16 and load["correct_share"] == 1.0 and load["clients"] == 8
    assert 0 < load["p50_ms"] <= load["p95_ms"] and load["requests_per_second"] > 0
    assert "**served model under load**" in bench.markdown(results, bench.TARGETS["cpu"])


def test_every_target_names_a_measured_metric():
    loaders = {f"workers={w}" for w in set(bench.CPU.loader_workers) | set(bench.CUDA.loader_workers)}
    keys = {"prepare": {"workers=1", "workers=0"}, "loader": loaders, "train": set(bench.VARIANTS),
            "evaluate": set(bench.VARIANTS), "serving": {"load"}}
    cases = {"loader_project_over_torchvision": loaders, "train_step_project_over_plain_fp32": set(bench.VARIANTS),
             "flop_utilisation": set(bench.VARIANTS), "evaluate_project_over_autotuned": set(bench.VARIANTS),
             "train_step_compiled_over_eager": set(bench.CUDA.compile_variants),
             "confusion_bincount_over_torchmetrics": {None}, "loader_over_train_step": set(bench.VARIANTS),
             "onnxruntime_over_pytorch": set(bench.VARIANTS)}
    for targets in bench.TARGETS.values():
        for path, target in targets.items():
            section, key, *name = path.split("/")
            if section == "comparisons":
                assert (name[0] if name else None) in cases[key], path
            elif section == "slide":  # slide/<runtime>/<photo>/<metric>
                assert key in {"torch", "onnxruntime"} and name[0] in bench.CPU.slide_photos and len(name) == 2, path
            else:
                assert key in keys[section] and len(name) == 1, path
            assert target and set(target) <= {"min", "max"}, path


def test_comparisons_are_ratios_of_measurements_taken_side_by_side(results):
    ratios, details = results["comparisons"], results["comparison_details"]
    assert set(ratios) == {"loader_project_over_torchvision", "train_step_project_over_plain_fp32",
                           "confusion_bincount_over_torchmetrics", "loader_over_train_step",
                           "onnxruntime_over_pytorch"}  # the rest: CUDA only
    onnx = results["onnxruntime"]["unet-4"]
    assert ratios["onnxruntime_over_pytorch"]["unet-4"] == pytest.approx(
        onnx["images_per_second"] / results["evaluate"]["unet-4"]["images_per_second"], rel=1e-3)
    assert onnx["size"] == results["evaluate"]["unet-4"]["size"] and onnx["export_seconds"] > 0
    best_loader = max(row["samples_per_second"] for row in results["loader"].values())
    assert ratios["loader_over_train_step"]["unet-4"] == pytest.approx(
        best_loader / results["train"]["unet-4"]["images_per_second"], rel=1e-3)
    loader = details["loader_project_over_torchvision"]["workers=0"]
    assert loader["ratio"] == pytest.approx(loader["project_samples_per_second"]
                                            / loader["torchvision_samples_per_second"])
    assert set(ratios["loader_project_over_torchvision"]) == {"workers=0", "workers=2"}
    step = details["train_step_project_over_plain_fp32"]["unet-4"]
    assert step["ratio"] == pytest.approx(step["project_images_per_second"] / step["plain_fp32_images_per_second"])
    confusion = details["confusion_bincount_over_torchmetrics"]  # computed only after both matrices agree
    assert confusion["ratio"] == pytest.approx(confusion["project_images_per_second"]
                                               / confusion["torchmetrics_images_per_second"])
    assert all(value > 0 for value in (ratios["confusion_bincount_over_torchmetrics"],
                                       *ratios["loader_project_over_torchvision"].values()))
    table = bench.markdown(results, bench.TARGETS["cpu"])
    assert "| loader_project_over_torchvision | workers=0 |" in table and "≥ 1.2" in table
    assert "**ONNX Runtime**" in table and "| onnxruntime_over_pytorch | unet-4 |" in table


def test_the_torchvision_alternative_yields_what_the_project_trains_on(tmp_path):
    """The alternative is a fair one: every train sample, cropped to the same size, a normalised float image and
    an int64 label of class ids and void (255) like the project's batches."""
    from devtools.comparisons import torchvision_dataset, torchvision_loader
    from pipeline.core.params.train import TrainParams
    from pipeline.ingest.prepare import prepare
    from pipeline.training.augment import train_batch

    voc_root = bench.generated_voc(tmp_path, TINY)
    recipe = TrainParams(crop_size=[32, 40], batch_size=2)
    theirs = torchvision_dataset(voc_root, recipe)
    prepare(voc_root, tmp_path / "prepared", workers=1, progress=False)
    ours = train_batch(list(PreparedSplit(tmp_path / "prepared", "train")), torch.device("cpu"), recipe.crop_size,
                       recipe.scale_range, recipe.hflip)
    assert len(theirs) == len(ours[0]) == 3
    for index in range(len(theirs)):
        image, label = theirs[index]
        assert image.dtype == ours[0].dtype == torch.float32 and image.shape == ours[0].shape[1:] == (3, 32, 40)
        assert label.dtype == ours[1].dtype == torch.int64 and label.shape == ours[1].shape[1:] == (32, 40)
        assert set(label.unique().tolist()) <= set(range(21)) | {255}
        assert -3 < float(image.mean()) < 3  # normalised, not 0..1 or 0..255
    assert list(torchvision_loader(voc_root, recipe, torch.device("cpu"), workers=0, seed=0)()) == [2, 1]


def test_the_evaluation_comparison_gives_each_path_sizes_it_has_not_met():
    """The CUDA evaluation comparison, run on the CPU at toy scale so that it cannot rot: families of VOC-like sizes
    with no size in common (each path meets new shapes), cold and warm timings of every path and policy."""
    from itertools import combinations

    from devtools.comparisons import FAMILIES, compare_evaluate, voc_like_sizes

    families = [set(voc_like_sizes(60, seed=0, family=family)) for family in range(FAMILIES)]
    assert all(not (first & second) for first, second in combinations(families, 2))
    for sizes in families:
        assert all(500 in size and 281 <= min(size) <= 500 for size in sizes)
    row = compare_evaluate("unet", {"width": 4}, images=3, device=torch.device("cpu"), batch_size=2)
    assert {"project_cold_ms_per_image", "autotuned_cold_ms_per_image", "batched_cold_ms_per_image",
            "project_warm_ms_per_image", "batched_warm_ms_per_image"} <= set(row)
    assert row["policy"] == "fp32+channels_last" and set(row["policies"]) == {row["policy"]}  # the CPU's only one
    assert row["ratio"] == pytest.approx(row["autotuned_cold_ms_per_image"] / row["project_cold_ms_per_image"])
    assert isinstance(row["differing_pixels"], int) and row["differing_pixels"] >= 0  # its size is the GPU's finding


def test_a_published_run_becomes_the_pages_generated_section(results, tmp_path):
    """`tools.bench_page`'s path: the run's results file is copied beside the page and its section regenerated from
    it, naming the device and every target; the hand-written rest of the page is untouched; rerendering changes
    nothing; a device without a section is one clear error."""
    from devtools import bench_page
    from pipeline.core.errors import PipelineError

    run_file = tmp_path / "results.json"
    targets = {"loader/workers=0/samples_per_second": {"min": 1e-6}}
    run_file.write_text(json.dumps({**results, "targets": targets, "missed": []}))
    page = tmp_path / "docs" / "performance.md"
    page.parent.mkdir()
    page.write_text("# Speed\n\nhand-written\n\n<!-- bench: bench/cpu.json -->\nold numbers\n<!-- end bench -->\n"
                    "\n<!-- bench: bench/cuda.json -->\n<!-- end bench -->\nmore text\n")
    assert bench_page.publish(run_file, page) == tmp_path / "docs" / "bench" / "cpu.json"
    text = page.read_text()
    assert "old numbers" not in text and "hand-written" in text and text.endswith("more text\n")
    assert results["device"]["name"] in text and "| unet-4 |" in text and "≥ 1e-06" in text
    assert "Every target met" in text and f"{results['seconds']['total'] / 60:.1f} min" in text
    assert "Not measured yet: no single run has written `bench/cuda.json`" in text
    assert bench_page.render(text, page.parent) == text
    assert set(results["seconds"]) == {"prepare and loader", "train and evaluate", "comparisons", "total"}
    assert results["comparisons"]["loader_over_train_step"]["unet-4"] > 0

    cuda = {**json.loads(run_file.read_text()), "device": {**results["device"], "type": "cuda"}}
    run_file.write_text(json.dumps(cuda))
    page.write_text("# no sections\n")
    with pytest.raises(PipelineError, match=r"has no section for bench/cuda.json"):
        bench_page.publish(run_file, page)
