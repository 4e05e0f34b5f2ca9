"""Fine-tuning: starting from a trained segmentation model of another class count (a model file of this pipeline, a
torchvision-format state dict, or torchvision's own weights through the hub cache), a frozen backbone that comes out
byte-identical, a head learning rate, and one-line refusals of what cannot be started from."""

from __future__ import annotations

import copy
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models.segmentation import DeepLabV3_MobileNet_V3_Large_Weights, deeplabv3_mobilenet_v3_large

from devtools.synthetic import FOLDERS_CLASSES, FOLDERS_COLORS, FOLDERS_IGNORE_COLOR, write_folders_dataset
from pipeline.core.errors import PipelineError
from pipeline.core.labels import VOC_LABELS
from pipeline.core.params.data import DatasetParams
from pipeline.core.params.schema import ParamsFile
from pipeline.ingest.prepare import prepare
from pipeline.models.registry import build, typed_options
from pipeline.models.saved import save_model
from pipeline.models.weights import file_sha256, hub_path
from pipeline.training.loop import TrainingJob, train_model
from pipeline.training.optimization import make_optimizer, make_scheduler

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"
SOURCE_OPTIONS = {"backbone": "resnet18", "output_stride": 16, "aux_loss": False}
TRAIN = {"epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "crop_size": [48, 48],
         "scale_range": [0.75, 1.25], "workers": 0, "device": "cpu", "amp": False, "val_every": 2}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    """A generated 3-class dataset (background, crack, rust) in the folders layout, prepared."""
    root = tmp_path_factory.mktemp("three")
    write_folders_dataset(root / "plates", n_images=18, max_size=72, n_classes=3)
    dataset = DatasetParams(name="plates", layout="folders", splits={"train": "splits/train.txt",
                                                                     "val": "splits/val.txt"},
                            classes=list(FOLDERS_CLASSES[:3]), colors=[list(c) for c in FOLDERS_COLORS[:3]],
                            ignore_color=list(FOLDERS_IGNORE_COLOR))
    prepare(root / "plates", root / "prepared", dataset=dataset, train_set="train", workers=1, progress=False)
    return root / "prepared"


@pytest.fixture(scope="module")
def voc_model_file(tmp_path_factory) -> Path:
    """A 21-class DeepLab (ResNet-18) model file of this pipeline, as a VOC train stage writes it."""
    path = tmp_path_factory.mktemp("source") / "model.pt"
    torch.manual_seed(7)
    net = build("deeplab", num_classes=21, **SOURCE_OPTIONS)
    with torch.no_grad():  # running statistics a trained model would have, not the fresh 0 / 1
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    save_model(path, net, architecture="deeplab", options=typed_options("deeplab", SOURCE_OPTIONS), labels=VOC_LABELS)
    return path


def job(init: dict | None, **train) -> TrainingJob:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(TRAIN)
    raw["dataset"]["name"] = "plates"
    raw["models"] = {"deeplab": {"architecture": "deeplab", "options": SOURCE_OPTIONS, "train": train,
                                 **({"init": init} if init else {})}}
    return TrainingJob.from_params(ParamsFile(raw), "deeplab")


def test_a_3_class_model_from_a_21_class_file_with_a_frozen_backbone_keeps_it_byte_identical(
        three_classes, voc_model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)
    result = train_model(job({"from": str(voc_model_file)}, freeze_backbone_epochs=2), prepared=three_classes,
                         checkpoint_dir=tmp_path / "c", progress=False)
    source = torch.load(voc_model_file, weights_only=True)["state_dict"]
    trained = result.model.state_dict()
    backbone = [key for key in trained if key.startswith("backbone.")]
    assert backbone and all(torch.equal(trained[key], source[key]) for key in backbone)  # BatchNorm stats included
    assert trained["classifier.4.weight"].shape[0] == 3 and source["classifier.4.weight"].shape[0] == 21
    head_norm = "classifier.2.running_mean"  # DeepLabHead: ASPP, conv, BatchNorm, ReLU, the 1×1 class scorer
    assert not torch.equal(trained[head_norm], source[head_norm])  # the head trains meanwhile
    summary = result.summary
    assert summary["init_from"] == str(voc_model_file) and summary["init_sha256"] == file_sha256(voc_model_file)
    assert summary["init_reinitialized"] == "classifier.4.bias, classifier.4.weight"
    assert summary["init_loaded"] == len(trained) - 2


def test_unfrozen_the_backbone_trains_and_the_head_gets_its_own_learning_rate(voc_model_file):
    recipe = job({"from": str(voc_model_file)}, head_lr_mult=10.0, optimizer="sgd", lr=0.01).recipe
    net = build("deeplab", num_classes=3, **SOURCE_OPTIONS)
    optimizer = make_optimizer(net, recipe, net.backbone)
    backbone, head = optimizer.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in net.backbone.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(list(net.parameters()))
    assert (backbone["lr"], head["lr"]) == (0.01, pytest.approx(0.1))
    scheduler = make_scheduler(optimizer, recipe, iters_per_epoch=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert head["lr"] == pytest.approx(10 * backbone["lr"]) and backbone["lr"] < 0.01  # poly scales both groups


@pytest.mark.parametrize("content, message", [
    (b"not a model at all", "cannot be read as a model"),
    ({"weights": [1, 2, 3]}, "is not a model of this pipeline nor a torchvision state dict"),
])
def test_a_junk_init_file_is_one_line_naming_it(content, message, tmp_path):
    path = tmp_path / "junk.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    net = build("deeplab", num_classes=3, **SOURCE_OPTIONS)
    from pipeline.models.weights import load_init

    with pytest.raises(PipelineError) as error:
        load_init(net, str(path), None, backbone="backbone", torchvision=None, where="models.deeplab")
    assert str(error.value).startswith(f"models.deeplab.init.from: {path} ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_model_of_another_architecture_or_a_changed_file_is_refused(tmp_path, voc_model_file):
    from pipeline.models.weights import load_init

    unet = tmp_path / "unet.pt"
    save_model(unet, build("unet", num_classes=21, width=4), architecture="unet", options=typed_options("unet"),
               labels=VOC_LABELS)
    net = build("deeplab", num_classes=3, **SOURCE_OPTIONS)
    with pytest.raises(PipelineError, match=r"fits 0 of this network's \d+ backbone tensors .*another architecture"):
        load_init(net, str(unet), None, backbone="backbone", torchvision=None, where="models.deeplab")
    with pytest.raises(PipelineError, match=rf"^models.deeplab.init.sha256: {voc_model_file} has sha256 "):
        load_init(net, str(voc_model_file), "0" * 64, backbone="backbone", torchvision=None, where="models.deeplab")


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvisions_weights_load_from_the_hub_cache_and_offline_name_the_file(offline, tmp_path):
    options = {"backbone": "mobilenet_v3_large", "aux_loss": True}
    weights = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"] = {"m": {"architecture": "deeplab", "options": options, "init": {"from": "torchvision"}}}
    from pipeline.models.registry import architecture
    from pipeline.models.weights import load_init

    whole_model = architecture("deeplab").torchvision_weights(typed_options("deeplab", options))
    assert whole_model is weights
    net = build("deeplab", num_classes=3, weights=False, **options)
    with pytest.raises(PipelineError) as error:
        load_init(net, "torchvision", None, backbone="backbone", torchvision=whole_model, where="models.m")
    assert weights.url in str(error.value) and str(hub_path(weights)) in str(error.value)

    # torchvision's own state dict, as its builder makes it: what its file holds
    torch.manual_seed(0)
    state = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21,
                                         aux_loss=True).state_dict()
    offline.mkdir(parents=True, exist_ok=True)  # the failed download made it
    torch.save(state, hub_path(weights))
    report = load_init(net, "torchvision", None, backbone="backbone", torchvision=whole_model, where="models.m")
    assert report["reinitialized"] == ["aux_classifier.4.bias", "aux_classifier.4.weight", "classifier.4.bias",
                                       "classifier.4.weight"]
    loaded = net.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if key not in report["reinitialized"])
    # the same file as a local torchvision-format state dict
    local = tmp_path / "coco.pth"
    torch.save(state, local)
    again = build("deeplab", num_classes=3, weights=False, **options)
    assert load_init(again, str(local), file_sha256(local), backbone="backbone", torchvision=None,
                     where="models.m")["loaded"] == report["loaded"]
    fcn = architecture("fcn")
    assert fcn.torchvision_weights is None  # ours are ResNet-18/34 FCNs, not torchvision's ResNet-50/101


@pytest.mark.parametrize("change, message", [
    ({"architecture": "unet", "options": {"width": 4}, "train": {"freeze_backbone_epochs": 1}},
     r"models.m.train.freeze_backbone_epochs: architecture unet has no backbone"),
    ({"architecture": "unet", "options": {"width": 4}, "train": {"head_lr_mult": 10}},
     r"models.m.train.head_lr_mult: architecture unet has no backbone"),
    ({"architecture": "fcn", "init": {"from": "torchvision", "sha256": "0" * 64}},
     r"models.m.init.sha256: only used with a local file"),
    ({"architecture": "fcn", "init": {"from": "x.pt", "sha256": "abc"}}, r"models.m.init.sha256: must be 64 hex"),
    ({"architecture": "fcn", "init": {"source": "x.pt"}}, r"models.m.init.source: unknown key; allowed keys here: "
                                                          r"from, sha256"),
])
def test_fine_tuning_params_that_cannot_apply_are_one_line(change, message):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"] = {"m": copy.deepcopy(change)}
    with pytest.raises(PipelineError, match=rf"^params.yaml: {message}"):
        TrainingJob.from_params(ParamsFile(raw), "m")
