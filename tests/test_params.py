"""params.yaml → typed object: every kind of mistake is one line naming the key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.core import params
from pipeline.core.errors import PipelineError

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
    assert list(config.models) == ["fcn", "unet", "deeplab", "deeplabv3plus"]
    assert config.train_for("unet").lr == 0.05 and config.train_for("fcn").lr == config.train.lr
    assert config.data.md5 == "6cd6e144f989b92b3379bac3b3de84fd" and config.data.size == 1_999_639_040
    from devtools.demo import merge_overrides

    demo = params.parse(merge_overrides(BASE, yaml.safe_load((REPO / "params.demo.yaml").read_text())))
    assert demo.train_for("deeplab").bn_momentum == 0.1


@pytest.mark.parametrize("path, value, message", [
    ("train.lr", -1, "train.lr: must be > 0, got -1"),
    ("train.lr", "fast", "train.lr: must be a finite number, got 'fast'"),
    ("train.lr", float("nan"), "train.lr: must be a finite number, got nan"),
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
    ("models.fcn.architecture", "segformer",
     "models.fcn.architecture: must be one of fcn, unet, deeplab, deeplabv3plus"),
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
    with pytest.raises(PipelineError,
                       match=r"unknown model 'segformer': params.yaml lists fcn, unet, deeplab, deeplabv3plus"):
        config.model_key("segformer")


@pytest.mark.parametrize("model, options, message", [
    ("fcn", {"variant": "x"}, "models.fcn.options.variant: must be one of fcn32s, fcn8s, got 'x'"),
    ("fcn", {"depth": 3},
     "models.fcn.options.depth: unknown key; allowed keys here: variant, pretrained, weights_sha256"),
    ("fcn", {"pretrained": "imagenet", "weights_sha256": "a" * 64},
     "models.fcn.options.weights_sha256: only used with a local weights file"),
    ("fcn", {"pretrained": "x.pth", "weights_sha256": "abc"},
     "models.fcn.options.weights_sha256: must be 64 hexadecimal digits, got 'abc'"),
    ("fcn", {"pretrained": True}, "models.fcn.options.pretrained: must be a non-empty string, got True"),
    ("unet", {"pretrained": "imagenet"},
     "models.unet.options.pretrained: must be none (U-Net has no pretrained backbone"),
    ("unet", {"width": 0}, "models.unet.options.width: must be >= 1, got 0"),
    ("unet", {"width": True}, "models.unet.options.width: must be an integer, got True"),
    ("unet", {"upsampling": "nearest"},
     "models.unet.options.upsampling: must be one of bilinear, transpose, got 'nearest'"),
    ("unet", {"variant": "fcn8s"}, "models.unet.options.variant: unknown key"),
    ("deeplab", {"backbone": "vgg16"},
     "models.deeplab.options.backbone: must be one of resnet50, resnet101, mobilenet_v3_large, resnet18, got 'vgg16'"),
    ("deeplab", {"aux_loss": "yes"}, "models.deeplab.options.aux_loss: must be true or false, got 'yes'"),
    ("deeplab", {"backbone": "resnet18", "aux_loss": True},
     "models.deeplab.options.aux_loss: backbone resnet18 has no auxiliary head"),
    ("deeplab", {"output_stride": 16}, "models.deeplab.options.output_stride: only the resnet18 backbone takes it"),
    ("deeplab", {"backbone": "resnet18", "output_stride": 32},
     "models.deeplab.options.output_stride: must be one of 8, 16, got 32"),
    ("deeplabv3plus", {"backbone": "mobilenet_v3_large"},
     "models.deeplabv3plus.options.backbone: must be one of resnet50, resnet101, resnet18, got 'mobilenet_v3_large'"),
    ("deeplabv3plus", {"output_stride": 32},
     "models.deeplabv3plus.options.output_stride: must be one of 8, 16, got 32"),
])
def test_bad_model_options_are_one_line_errors_when_params_load(model, options, message):
    with pytest.raises(PipelineError) as error:
        params.parse(with_change(f"models.{model}.options", options))
    assert str(error.value).startswith(f"params.yaml: {message}") and "\n" not in str(error.value)


def test_model_options_are_typed_with_their_defaults():
    config = params.parse(with_change("models.deeplab.options", {"backbone": "resnet18"}))
    assert config.model("deeplab").options == params.DeepLabOptions(backbone="resnet18", aux_loss=False)
    assert config.model("deeplab").options.output_stride == 8
    assert params.model_options("Deeplab", {}).output_stride is None  # resnet50: torchvision's fixed stride
    assert config.model("unet").options == params.UNetOptions(width=64, upsampling="bilinear")
    assert params.model_options("Deeplab", {}) == params.DeepLabOptions(backbone="resnet50", aux_loss=True)
    assert params.model_options("FCN", {}) == params.FCNOptions(variant="fcn32s", pretrained="none")
    assert config.model("deeplabv3plus").options == params.DeepLabV3PlusOptions(
        backbone="resnet50", output_stride=16, aux_loss=True, pretrained="imagenet")
    assert params.model_options("deeplabv3plus", {"backbone": "resnet18"}).aux_loss is False
    assert params.model_options("deeplabv3plus", {"backbone": "resnet18"}).summary == "resnet18-os16"


def test_loading_params_imports_no_model_code():
    import subprocess
    import sys

    code = ("import sys; from pipeline.core.params import load; load('params.yaml'); "
            "print(sorted(m for m in sys.modules if m.startswith(('torch', 'pipeline.models'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed")
    with pytest.raises(PipelineError, match="not valid YAML"):
        params.load(tmp_path / "params.yaml")
