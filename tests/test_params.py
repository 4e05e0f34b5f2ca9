"""params.yaml → typed sections: every kind of mistake is one line naming the key and what is allowed; each stage
reads its own sections; the code's defaults are the committed file's values."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.params import whole
from pipeline.core.params.data import DataParams, DatasetParams, PrepareParams, SourceParams
from pipeline.core.params.evaluate import EvaluateParams
from pipeline.core.params.export import ExportParams
from pipeline.core.params.render import RenderParams
from pipeline.core.params.schema import ParamsFile
from pipeline.core.params.serving import ServingParams
from pipeline.core.params.tracking import TrackingParams
from pipeline.core.params.train import TrainParams
from pipeline.models.architectures.deeplab import DeepLabOptions
from pipeline.models.architectures.deeplabv3plus import DeepLabV3PlusOptions
from pipeline.models.architectures.fcn import FCNOptions
from pipeline.models.architectures.unet import UNetOptions
from pipeline.models.registry import typed_options
from pipeline.training.loop import TrainingJob

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
    config = whole.load(REPO / "params.yaml")
    assert list(config.models) == ["fcn", "unet", "deeplab", "deeplabv3plus"]
    assert config.train_for("unet").lr == 0.05 and config.train_for("fcn").lr == config.train.lr
    assert config.data.md5 == "6cd6e144f989b92b3379bac3b3de84fd" and config.data.size == 1_999_639_040
    from devtools.demo import merge_overrides

    demo = whole.parse(merge_overrides(BASE, yaml.safe_load((REPO / "params.demo.yaml").read_text())))
    assert demo.train_for("deeplab").bn_momentum == 0.1
    for key in demo.models:
        TrainingJob.from_params(demo.file, key)  # every model's options, as its train stage types them


# Sections whose defaults in code are not params.yaml's, with why: the archive's identity (urls, md5, size) has no
# default that could be right, and `models` has no defaults at all.
NO_DEFAULT = {"data": {"urls", "md5", "size"}, "sbd": {"urls", "md5", "size"}}
SCHEMAS = {"data": SourceParams, "sbd": DataParams, "dataset": DatasetParams, "prepare": PrepareParams,
           "train": TrainParams, "evaluate": EvaluateParams, "export": ExportParams, "serving": ServingParams,
           "render": RenderParams, "tracking": TrackingParams}


@pytest.mark.parametrize("section", SCHEMAS)
def test_the_codes_defaults_are_the_committed_files_values_and_it_lists_every_key(section):
    """One source of defaults: a key left out of a user's params.yaml means what the committed file says."""
    defaults = dataclasses.asdict(SCHEMAS[section]())
    committed = BASE[section]
    assert set(committed) == set(defaults), f"params.yaml's {section} lists {sorted(committed)}"
    for key, value in committed.items():
        if key not in NO_DEFAULT.get(section, ()):
            assert defaults[key] == value, f"{section}.{key}: the code says {defaults[key]!r}, params.yaml {value!r}"


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
    ("train.loss", [], "train.loss: list at least one loss"),
    ("train.loss", [{"weight": 1.0}], "train.loss[0].name: missing"),
    ("train.loss", [{"name": "cross_entropy", "weight": 0}], "train.loss[0].weight: must be a number > 0, got 0"),
    ("data.md5", "abc", "data.md5: must be 32 lowercase hex digits, got 'abc'"),
    ("data.urls", [], "data.urls: list at least one URL"),
    ("data.urls", "http://x", "data.urls: must be a list"),
    ("models.unet.train", {"lr": 0}, "models.unet.train.lr: must be > 0, got 0"),
    ("models.unet.train", {"epoch": 3}, "models.unet.train.epoch: unknown key"),
    ("render.ids", [2007000033], "render.ids[0]: must be a non-empty string, got 2007000033"),
    ("inference.scales", [1.0, -0.5], "inference.scales: must be a non-empty list of positive numbers"),
    ("inference.mode", "sliding", "inference.mode: must be one of"),
    ("inference.crop_size", [512], "inference.crop_size: must be [height, width], two positive integers"),
    ("inference.stride", [600, 300], "inference.stride: [600, 300] is larger than crop_size [512, 512]"),
    ("evaluate.flip", True, "evaluate.flip: moved to inference.flip; move it there"),
])
def test_each_bad_value_gives_its_one_line_error(path, value, message):
    with pytest.raises(PipelineError) as error:
        whole.parse(with_change(path, value))
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"params.yaml: {message}")


def test_missing_required_key_and_unknown_section():
    with pytest.raises(PipelineError, match=r"^params.yaml: data.md5: missing \(required\)$"):
        whole.parse(with_change("data.md5", None, delete=True))
    raw = copy.deepcopy(BASE)
    raw["trian"] = {}
    # Every stage refuses it, not only the whole file's reader: a misspelt section would leave the real one's keys
    # at their defaults.
    with pytest.raises(PipelineError, match=r"^params.yaml: trian: unknown key; allowed keys here: data, sbd, "):
        ParamsFile(raw)


def test_unknown_model_name_lists_the_models():
    config = ParamsFile.read(REPO / "params.yaml")
    assert config.model_key("FCN") == "fcn" and config.model_key("Deeplab") == "deeplab"
    with pytest.raises(PipelineError,
                       match=r"unknown model 'segformer': \S*params.yaml lists fcn, unet, deeplab, deeplabv3plus"):
        config.model_key("segformer")


def job(raw: dict, model: str) -> TrainingJob:
    return TrainingJob.from_params(ParamsFile(raw), model)


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
def test_bad_model_options_are_one_line_errors_before_the_train_stage_does_any_work(model, options, message):
    with pytest.raises(PipelineError) as error:
        job(with_change(f"models.{model}.options", options), model)
    assert str(error.value).startswith(f"params.yaml: {message}") and "\n" not in str(error.value)


def test_an_unknown_architecture_or_loss_lists_what_there_is():
    with pytest.raises(PipelineError, match=r"^params.yaml: models.fcn.architecture: unknown architecture 'segformer'; "
                                            r"must be one of deeplab, deeplabv3plus, fcn, smp, unet$"):
        job(with_change("models.fcn.architecture", "segformer"), "fcn")
    with pytest.raises(PipelineError, match=r"^params.yaml: train.loss\[0\].name: unknown loss 'tversky'; must be "
                                            r"one of cross_entropy, dice, focal, lovasz$"):
        job(with_change("train.loss", [{"name": "tversky", "weight": 1.0}]), "fcn")
    with pytest.raises(PipelineError, match=r"^params.yaml: models.fcn.train.loss\[0\].gamma: unknown key"):
        job(with_change("models.fcn.train", {"loss": [{"name": "cross_entropy", "gamma": 2}]}), "fcn")


def test_model_options_are_typed_with_their_defaults():
    assert typed_options("deeplab", {"backbone": "resnet18"}) == DeepLabOptions(backbone="resnet18", aux_loss=False)
    assert typed_options("deeplab", {"backbone": "resnet18"}).output_stride == 8
    assert typed_options("deeplab", {}).output_stride is None  # resnet50: torchvision's fixed stride
    assert job(BASE, "unet").options == UNetOptions(width=64, upsampling="bilinear")
    assert typed_options("deeplab", {}) == DeepLabOptions(backbone="resnet50", aux_loss=True)
    assert typed_options("fcn", {}) == FCNOptions(variant="fcn32s", pretrained="none")
    assert job(BASE, "deeplabv3plus").options == DeepLabV3PlusOptions(
        backbone="resnet50", output_stride=16, aux_loss=True, pretrained="imagenet")
    assert typed_options("deeplabv3plus", {"backbone": "resnet18"}).aux_loss is False
    assert typed_options("deeplabv3plus", {"backbone": "resnet18"}).summary == "resnet18-os16"


def test_the_data_stages_params_import_no_model_or_training_code():
    code = ("import sys; from pipeline.core.params.data import data_sections; "
            "from pipeline.core.params.schema import ParamsFile; data_sections(ParamsFile.read('params.yaml')); "
            "print(sorted(m for m in sys.modules "
            "if m.startswith(('torch', 'pipeline.models', 'pipeline.core.params.'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['pipeline.core.params.data', 'pipeline.core.params.schema']"


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        whole.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed")
    with pytest.raises(PipelineError, match="not valid YAML"):
        whole.load(tmp_path / "params.yaml")
