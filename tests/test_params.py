"""params.yaml → typed object: every kind of mistake is one line naming the key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline import params
from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def with_change(path: str, value, *, delete: bool = False) -> dict:
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return raw


def test_the_committed_params_and_the_demo_overrides_are_valid():
    config = params.load(REPO / "params.yaml")
    assert list(config.models) == ["fcn", "unet", "deeplab"]
    assert config.train_for("unet").lr == 0.05 and config.train_for("fcn").lr == config.train.lr
    assert config.data.md5 == "6cd6e144f989b92b3379bac3b3de84fd" and config.data.size == 1_999_639_040
    from pipeline.demo import _merge

    demo = params.parse(_merge(BASE, yaml.safe_load((REPO / "params.demo.yaml").read_text())))
    assert demo.train_for("deeplab").bn_momentum == 0.1


@pytest.mark.parametrize("path, value, message", [
    ("train.lr", -1, "train.lr: must be > 0, got -1"),
    ("train.lr", "fast", "train.lr: must be a number, got 'fast'"),
    ("train.epochs", 1.5, "train.epochs: must be an integer, got 1.5"),
    ("train.epochs", 0, "train.epochs: must be >= 1, got 0"),
    ("train.hflip", "yes", "train.hflip: must be true or false, got 'yes'"),
    ("train.optimizer", "lbfgs", "train.optimizer: must be one of sgd, adam, adamw, got 'lbfgs'"),
    ("train.momentum", 1.0, "train.momentum: must be < 1, got 1.0"),
    ("train.device", "tpu", "train.device: must be one of auto, cpu, cuda, cuda:N, got 'tpu'"),
    ("train.crop_size", [480], "train.crop_size: must be [height, width] of positive ints, got [480]"),
    ("train.scale_range", [2.0, 0.5], "train.scale_range: must be [low, high] with 0 < low <= high"),
    ("train.learning_rate", 0.1, "train.learning_rate: unknown key; allowed keys here: epochs, batch_size"),
    ("data.md5", "abc", "data.md5: must be 32 lowercase hex digits, got 'abc'"),
    ("data.urls", [], "data.urls: list at least one URL"),
    ("data.urls", "http://x", "data.urls: must be a list"),
    ("models.fcn.architecture", "segformer", "models.fcn.architecture: must be one of fcn, unet, deeplab"),
    ("models.unet.train", {"lr": 0}, "models.unet.train.lr: must be > 0, got 0"),
    ("models.unet.train", {"epoch": 3}, "models.unet.train.epoch: unknown key"),
    ("render.ids", [2007000033], "render.ids[0]: must be a non-empty string, got 2007000033"),
    ("evaluate.scales", [1.0, -0.5], "evaluate.scales: must be a non-empty list of positive numbers"),
])
def test_each_bad_value_gives_its_one_line_error(path, value, message):
    with pytest.raises(PipelineError) as error:
        params.parse(with_change(path, value))
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"params.yaml: {message}")


def test_missing_required_key_and_unknown_section():
    with pytest.raises(PipelineError, match=r"^params.yaml: data.md5: missing \(required\)$"):
        params.parse(with_change("data.md5", None, delete=True))
    raw = copy.deepcopy(BASE)
    raw["trian"] = {}
    with pytest.raises(PipelineError, match=r"^params.yaml: trian: unknown key; allowed keys here: data, models"):
        params.parse(raw)


def test_unknown_model_name_lists_the_models():
    config = params.load(REPO / "params.yaml")
    assert config.model_key("FCN") == "fcn" and config.model_key("Deeplab") == "deeplab"
    with pytest.raises(PipelineError, match=r"unknown model 'segformer': params.yaml lists fcn, unet, deeplab"):
        config.model_key("segformer")


def test_bad_model_options_are_refused_by_the_registry_before_work_starts():
    from pipeline.models import validate

    with pytest.raises(PipelineError, match=r"models.fcn.options.variant: must be one of fcn32s, fcn8s, got 'x'"):
        validate("fcn", {"variant": "x"}, where="models.fcn.options")


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed")
    with pytest.raises(PipelineError, match="not valid YAML"):
        params.load(tmp_path / "params.yaml")
