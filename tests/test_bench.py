"""pipeline.devtools.bench at toy sizes: the structure of its results, the target check, and the stage's exit status.
Timings themselves are not checked: they depend on the machine."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from pipeline.cli import run_stage
from pipeline.devtools import bench
from tools import bench as bench_stage

TINY = bench.Settings(images=6, image_size=(40, 56), loader_workers=(0, 2), loader_budget_s=0.0, crop_size=(32, 32),
                      batch_size=2, warmup_steps=1, min_steps=1, max_steps=1, budget_s=0.0, eval_size=(40, 48),
                      eval_warmup=0, variants={"unet-4": ("unet", {"width": 4})})


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
    assert train["images_per_second"] > 0 and not train["amp"] and not train["channels_last"]
    assert evaluate["images"] == 1 and evaluate["size"] == [40, 48] and evaluate["images_per_second"] > 0
    assert train["peak_memory_mb"] >= 0 and evaluate["memory_method"]
    json.dumps(results, allow_nan=False)  # plain data, as written to bench/results.json

    table = bench.markdown(results, {"loader/workers=0/samples_per_second": {"min": 500}})
    assert "| unet-4 |" in table and "≥ 500" in table and torch.__version__ in table


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


def test_every_target_names_a_measured_metric():
    loaders = {f"workers={w}" for w in set(bench.CPU.loader_workers) | set(bench.CUDA.loader_workers)}
    keys = {"prepare": {"workers=1", "workers=0"}, "loader": loaders, "train": set(bench.VARIANTS),
            "evaluate": set(bench.VARIANTS)}
    for targets in bench.TARGETS.values():
        for path, target in targets.items():
            section, key, _name = path.split("/")
            assert key in keys[section], path
            assert target and set(target) <= {"min", "max"}, path


def test_stage_exits_2_when_a_target_is_missed(results, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results.json"
    monkeypatch.setattr(bench, "run", lambda workdir, device: results)
    monkeypatch.setattr(bench, "targets_for", lambda device: {"loader/workers=0/samples_per_second": {"min": 1e12}})
    monkeypatch.setattr(sys, "argv", ["bench", "--out", str(out), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        run_stage(bench_stage.main)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "target missed: loader/workers=0/samples_per_second" in stderr
    assert "1 of 1 benchmark targets missed" in stderr
    assert json.loads(out.read_text())["missed"][0].startswith("loader/workers=0/samples_per_second")
