"""pipeline.models, architecture by architecture: the variants beyond each one's first (which
tests/test_registered_models.py covers with every architecture's contract), FCN's upsampling init and skips,
DeepLab's atrous shortcut, DeepLabV3+'s decoder, ResNet init, backbone weights, and option messages."""

from __future__ import annotations

import functools
import math
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_registered_models import assert_learns
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import ResNet18_Weights, mobilenet_v3_large, resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck

from pipeline.core.errors import PipelineError
from pipeline.models.architectures.deeplab import TORCHVISION as TORCHVISION_DEEPLAB
from pipeline.models.architectures.fcn import BlockConvTranspose2d, FCN8s, FCN32s
from pipeline.models.layers import AtrousConv2d, set_batchnorm_momentum, zero_init_residual
from pipeline.models.registry import build
from pipeline.models.weights import file_sha256, hub_path

# Two shared cores: one thread each avoids oversubscription, and these models are small at these sizes.
torch.set_num_threads(1)

# The variants beyond each architecture's first (fcn32s, U-Net width 8, DeepLab ResNet-18 at stride 8, DeepLabV3+
# ResNet-18 at stride 16), which tests/test_registered_models.py covers.
CASES = {
    "fcn8s": ("fcn", {"variant": "fcn8s"}),
    "unet-transpose": ("unet", {"width": 8, "upsampling": "transpose"}),
    "deeplab-resnet18-os16": ("deeplab", {"backbone": "resnet18", "output_stride": 16}),
    "deeplab-mobilenet": ("deeplab", {"backbone": "mobilenet_v3_large"}),
    "deeplab-resnet50": ("deeplab", {"backbone": "resnet50"}),
    "deeplabv3plus-resnet18": ("deeplabv3plus", {"backbone": "resnet18", "output_stride": 8}),
    "deeplabv3plus-resnet50": ("deeplabv3plus", {"backbone": "resnet50"}),
}
# aux_loss defaults to true for these backbones
WITH_AUX = {"deeplab-mobilenet", "deeplab-resnet50", "deeplabv3plus-resnet50"}
# ResNet-50 at output stride 8 takes seconds per 320×480 batch on one core; at the large sizes its shapes are
# computed on the meta device, which runs the same shape logic without arithmetic.
HEAVY = {"deeplab-resnet50", "deeplabv3plus-resnet50"}
SIZES = [(320, 480), (333, 497), (64, 64)]


@functools.cache
def cached_model(case: str, device: str) -> nn.Module:
    name, options = CASES[case]
    with torch.device(device):
        return build(name, num_classes=21, **options)


def check_output(out: torch.Tensor | dict, expected: tuple[int, ...], with_aux: bool) -> None:
    if with_aux:
        assert isinstance(out, dict) and set(out) == {"out", "aux"}
        assert tuple(out["out"].shape) == expected and tuple(out["aux"].shape) == expected
    else:
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == expected


# --- the forward contract -------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", CASES)
def test_output_is_input_sized_logits(case, size, training):
    device = "meta" if case in HEAVY and size != (64, 64) else "cpu"
    model = cached_model(case, device).train(training)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size, device=device))
    check_output(out, (2, 21, *size), with_aux=training and case in WITH_AUX)


def test_deeplab_resnet101_runs():
    model = build("deeplab", num_classes=21, backbone="resnet101")
    with torch.no_grad():
        check_output(model.eval()(torch.randn(2, 3, 64, 64)), (2, 21, 64, 64), with_aux=False)
        check_output(model.train()(torch.randn(2, 3, 64, 64)), (2, 21, 64, 64), with_aux=True)


def test_num_classes_sets_the_output_channels():
    with torch.no_grad():
        assert build("unet", num_classes=5, width=4).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)


def test_aux_head_can_be_switched_off():
    model = build("deeplab", num_classes=21, backbone="mobilenet_v3_large", aux_loss=False).train()
    assert model.aux_classifier is None
    with torch.no_grad():
        check_output(model(torch.randn(2, 3, 64, 64)), (2, 21, 64, 64), with_aux=False)


def conv_dilations(layer: nn.Module) -> set[tuple[int, int]]:
    return {conv.dilation for block in layer for conv in (block.conv1, block.conv2)}


def test_deeplab_resnet18_has_output_stride_8():
    backbone = build("deeplab", num_classes=21, backbone="resnet18").backbone.eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 96))["out"].shape == (1, 512, 8, 12)
    assert conv_dilations(backbone.layer4) == {(4, 4)}


def test_deeplab_resnet18_at_output_stride_16_dilates_layer4_only():
    backbone = build("deeplab", num_classes=21, backbone="resnet18", output_stride=16).backbone.eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 96))["out"].shape == (1, 512, 4, 6)
    assert conv_dilations(backbone.layer3) == {(1, 1)}
    assert conv_dilations(backbone.layer4) == {(2, 2)}


# --- DeepLabV3+: the decoder reads the stride-4 features ---------------------------------------------------

def captured_inputs(module: nn.Module, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    handle = module.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplabv3plus_encodes_at_its_output_stride_and_decodes_at_stride_4(output_stride):
    model = build("deeplabv3plus", num_classes=21, backbone="resnet18", output_stride=output_stride).eval()
    x = torch.randn(1, 3, 97, 131)  # odd sizes: every stride rounds up, as the convolutions do
    with torch.no_grad():
        features = model.backbone(x)
    assert features["low"].shape == (1, 64, 25, 33)  # layer1: stride 4
    assert features["out"].shape[-2:] == ((7, 9) if output_stride == 16 else (13, 17))
    low_level, encoded = captured_inputs(model.decoder, model, x)
    assert torch.equal(low_level, features["low"])
    (fused,) = captured_inputs(model.decoder.fuse, model, x)
    assert fused.shape == (1, 256 + 48, 25, 33)  # ASPP's output upsampled to stride 4 beside the 48-channel projection
    rates = {module.dilation for module in model.aspp.modules() if isinstance(module, AtrousConv2d)}
    assert rates == ({(6, 6), (12, 12), (18, 18)} if output_stride == 16 else {(12, 12), (24, 24), (36, 36)})


def test_deeplabv3plus_scores_depend_on_the_stride_4_features():
    """Changing only layer1's output (the encoder's input from it left as it was) changes the scores: the
    decoder's path from the stride-4 features is live, not a decoration."""
    torch.manual_seed(0)
    model = build("deeplabv3plus", num_classes=21, backbone="resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(x)
        encoded = model.aspp(features["out"])
        scores = model.decoder(features["low"], encoded)
        shifted = model.decoder(features["low"] + torch.randn_like(features["low"]), encoded)
        torch.testing.assert_close(F.interpolate(scores, size=(64, 64), mode="bilinear", align_corners=False),
                                   model(x))
    assert scores.shape == (1, 21, 16, 16)
    assert (scores - shifted).abs().mean() > 1e-3


def test_deeplabv3plus_backbone_holds_torchvisions_resnet50_keys():
    """The dilated ResNet-50 under the decoder has torchvision's state-dict keys and shapes (so ImageNet files load),
    and the auxiliary head reads layer3."""
    model = build("deeplabv3plus", num_classes=21, backbone="resnet50")
    reference = {key: value.shape for key, value in resnet50().state_dict().items() if not key.startswith("fc.")}
    assert {key: value.shape for key, value in model.backbone.state_dict().items()} == reference
    assert model.aux_classifier[0].in_channels == 1024 and model.decoder.project[0].in_channels == 256


def test_deeplabv3plus_loads_local_resnet18_weights(resnet18_file):
    path, state = resnet18_file
    model = build("deeplabv3plus", num_classes=21,
                  backbone="resnet18", pretrained=str(path), weights_sha256=file_sha256(path))
    assert_backbone_holds(model.backbone, state, prefix="", skip="fc.")


# --- DeepLab: atrous convolutions that skip the taps outside the map ------------------------------------------

def conv_flops(conv: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("height,width,taps", [(6, 6, 1), (6, 20, 3), (20, 5, 3), (13, 12, 9), (30, 30, 9)],
                         ids=["both-outside", "rows-outside", "columns-outside", "both-inside", "large"])
def test_atrous_conv_matches_the_full_convolution_and_skips_only_taps_outside(height, width, taps):
    torch.manual_seed(0)
    full = nn.Conv2d(16, 8, 3, padding=6, dilation=6, bias=True)
    atrous = AtrousConv2d(full)
    assert atrous.weight is full.weight and atrous.bias is full.bias
    x = torch.randn(2, 16, height, width, requires_grad=True)
    grad_out = torch.randn(2, 8, height, width)

    expected = full(x)
    expected.backward(grad_out)
    expected_grads = [x.grad.clone(), full.weight.grad.clone(), full.bias.grad.clone()]
    x.grad = full.weight.grad = full.bias.grad = None
    got = atrous(x)
    got.backward(grad_out)

    # The skipped taps contribute exact zeros, so the two differ only in summation order.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    for grad, expected_grad in zip([x.grad, full.weight.grad, full.bias.grad], expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)
    assert conv_flops(atrous, x) * 9 == conv_flops(full, x) * taps


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large", "resnet50"])
def test_every_aspp_branch_is_atrous(backbone):
    model = build("deeplab", num_classes=21, backbone=backbone, aux_loss=False)
    assert sum(isinstance(module, AtrousConv2d) for module in model.classifier.modules()) == 3


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
def test_deeplab_state_dict_is_torchvisions(backbone):
    ours = build("deeplab", num_classes=21, backbone=backbone, aux_loss=True)
    theirs = TORCHVISION_DEEPLAB[backbone](weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    shapes = [{key: value.shape for key, value in net.state_dict().items()} for net in (ours, theirs)]
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3, padding=1, dilation=2),
                                  nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode="reflect")],
                         ids=["padded-less-than-dilated", "reflect-padded"])
def test_atrous_conv_refuses_a_convolution_it_cannot_stand_for(conv):
    """Only zero padding makes the skipped taps exact zeros."""
    with pytest.raises(ValueError, match="not an atrous 3×3 convolution"):
        AtrousConv2d(conv)


# --- FCN: bilinear upsampling and skips -----------------------------------------------------------------

def caffe_upsample_filter(size: int) -> torch.Tensor:
    """The FCN authors' `upsample_filt` (shelhamer/fcn.berkeleyvision.org, surgery.py), a different formula for
    the same kernel: factor = ceil(size / 2), centre in units of the factor, tap = 1 - |x / factor - centre|."""
    factor = math.ceil(size / 2)
    centre = (2 * factor - 1 - factor % 2) / (2 * factor)
    taps = torch.tensor([1 - abs(x / factor - centre) for x in range(size)])
    return torch.outer(taps, taps)


def upsampling_layers() -> list[tuple[nn.ConvTranspose2d, int]]:
    fcn8s = FCN8s(num_classes=3)
    return [(FCN32s(num_classes=3).upsample, 32), (fcn8s.up32, 2), (fcn8s.up16, 2), (fcn8s.up8, 8)]


@pytest.mark.parametrize("layer,factor", upsampling_layers(), ids=["fcn32s-x32", "fcn8s-x2a", "fcn8s-x2b", "fcn8s-x8"])
def test_transposed_conv_starts_as_bilinear_upsampling(layer, factor):
    assert isinstance(layer, BlockConvTranspose2d)
    assert layer.kernel_size == (2 * factor, 2 * factor) and layer.stride == (factor, factor)
    assert layer.padding == (factor // 2, factor // 2)
    expected = torch.zeros(3, 3, 2 * factor, 2 * factor)
    for channel in range(3):
        expected[channel, channel] = caffe_upsample_filter(2 * factor)
    torch.testing.assert_close(layer.weight.detach(), expected)
    assert not layer.bias.any()

    with torch.no_grad():
        out = layer(torch.full((1, 3, 5, 7), 2.5))
    assert out.shape == (1, 3, 5 * factor, 7 * factor)
    inner = out[..., factor:-factor, factor:-factor]
    torch.testing.assert_close(inner, torch.full_like(inner, 2.5))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("size", [(1, 1), (3, 3), (4, 7)], ids=["1x1", "3x3", "4x7"])
@pytest.mark.parametrize("factor", [2, 8, 32])
def test_block_transposed_conv_computes_what_the_transposed_conv_computes(factor, size, channels_last):
    """Output and every gradient equal nn.ConvTranspose2d's on the same parameters, but for rounding."""
    torch.manual_seed(0)
    reference = nn.ConvTranspose2d(5, 4, 2 * factor, stride=factor, padding=factor // 2)
    block = BlockConvTranspose2d(5, 4, factor)
    block.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outputs = [reference(inputs[0]), block(inputs[1])]
    assert outputs[0].shape == outputs[1].shape == (2, 4, size[0] * factor, size[1] * factor)
    grad = torch.randn_like(outputs[0])
    for out in outputs:
        out.backward(grad)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    # Gradients of the weight and bias sum up to 2 · 128 · 224 products: compared relative to their size.
    for ours, theirs in ((inputs[1].grad, inputs[0].grad), (block.weight.grad, reference.weight.grad),
                         (block.bias.grad, reference.bias.grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


def test_block_transposed_conv_refuses_an_odd_factor():
    with pytest.raises(ValueError, match="must be even"):
        BlockConvTranspose2d(3, 3, 3)


@pytest.mark.parametrize("skip", ["score16", "score8"])
def test_fcn8s_uses_both_skips(skip):
    torch.manual_seed(0)
    model = build("fcn", num_classes=21, variant="fcn8s").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        getattr(model, skip).weight.zero_()
        getattr(model, skip).bias.zero_()
        after = model(x)
    assert (before - after).abs().max() > 1e-3


# --- the models train -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_the_model_trains(case):
    """As every architecture's first variant does (tests/test_registered_models.py): Adam on a fixed batch halves
    the loss within 100 steps, and gradients reach every trainable parameter within two."""
    torch.manual_seed(0)
    name, options = CASES[case]
    assert_learns(build(name, num_classes=21, **options), 21)


def test_every_resnet_block_starts_as_its_shortcut():
    """`build` zeroes each block's last BatchNorm scale exactly as torchvision's own `zero_init_residual` does,
    for every ResNet backbone, torchvision's DeepLab builders (which do not pass it on) included."""
    torch.manual_seed(0)
    expected = resnet18(zero_init_residual=True).state_dict()
    torch.manual_seed(0)
    built = resnet18()
    assert zero_init_residual(built) == 8
    for key, value in built.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)

    for case, blocks in [("fcn8s", 16), ("deeplab-resnet18-os16", 8), ("deeplab-resnet50", 16),
                         ("deeplabv3plus-resnet18", 8), ("deeplabv3plus-resnet50", 16)]:
        last_norms = [module.bn3 if isinstance(module, Bottleneck) else module.bn2
                      for module in cached_model(case, "cpu").modules() if isinstance(module, BasicBlock | Bottleneck)]
        assert len(last_norms) == blocks and all(norm.weight.count_nonzero() == 0 for norm in last_norms)


# --- pretrained weights -----------------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache under tmp_path and a network that fails like a machine without one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_imagenet_offline_names_the_file_to_fetch(offline):
    with pytest.raises(PipelineError) as error:
        build("fcn", num_classes=21, pretrained="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert ResNet18_Weights.IMAGENET1K_V1.url in message
    assert str(offline / "resnet18-f37072fd.pth") in message
    assert "pretrained: none" in message and "Temporary failure in name resolution" in message


def test_imagenet_file_put_in_the_hub_cache_is_used_offline(offline):
    state = resnet18().state_dict()
    assert hub_path(ResNet18_Weights.IMAGENET1K_V1) == offline / "resnet18-f37072fd.pth"
    offline.mkdir(parents=True)
    torch.save(state, offline / "resnet18-f37072fd.pth")
    model = build("fcn", num_classes=21, pretrained="imagenet")
    assert_backbone_holds(model.backbone, state, prefix="", skip="fc.")


def test_unreadable_cached_imagenet_file_is_named(offline):
    offline.mkdir(parents=True)
    (offline / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="cannot be read.*delete the file"):
        build("fcn", num_classes=21, pretrained="imagenet")


def assert_backbone_holds(backbone: nn.Module, state: dict, prefix: str, skip: str) -> None:
    loaded = backbone.state_dict()
    expected = {key.removeprefix(prefix): value for key, value in state.items() if not key.startswith(skip)}
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    state = resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_local_weights_with_the_right_sha256_are_loaded(resnet18_file):
    path, state = resnet18_file
    model = build("deeplab", num_classes=21,
                  backbone="resnet18", pretrained=str(path), weights_sha256=file_sha256(path).upper())
    assert_backbone_holds(model.backbone, state, prefix="", skip="fc.")


def test_local_mobilenet_weights_are_loaded_into_its_features(tmp_path):
    state = mobilenet_v3_large().state_dict()
    path = tmp_path / "mobilenet.pth"
    torch.save(state, path)
    model = build("deeplab", num_classes=21,
                  backbone="mobilenet_v3_large", pretrained=str(path), weights_sha256=file_sha256(path))
    assert_backbone_holds(model.backbone, state, prefix="features.", skip="classifier.")


def test_local_weights_with_a_wrong_sha256_are_refused(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(PipelineError, match=f"has sha256 {file_sha256(path)}, expected 0{{64}}; refusing"):
        build("fcn", num_classes=21, pretrained=str(path), weights_sha256="0" * 64)


def test_local_weights_without_sha256_print_the_files_sha256(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(PipelineError, match=f"weights_sha256: required.*add weights_sha256: {file_sha256(path)}"):
        build("fcn", num_classes=21, pretrained=str(path))


def test_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(PipelineError,
                       match=f"models.fcn.options.pretrained: weights file {tmp_path / 'nope.pth'} not found"):
        build("fcn", num_classes=21, pretrained=str(tmp_path / "nope.pth"), weights_sha256="0" * 64)


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(PipelineError, match="does not fit torchvision's resnet34"):
        build("fcn", num_classes=21, variant="fcn8s", pretrained=str(path), weights_sha256=file_sha256(path))
    torch.save({"head.weight": torch.zeros(3)}, path)
    with pytest.raises(PipelineError, match=r"not a state dict of torchvision's resnet34: \d+ keys missing "
                                            r".*1 unexpected \(head.weight\)"):
        build("fcn", num_classes=21, variant="fcn8s", pretrained=str(path), weights_sha256=file_sha256(path))


# --- option messages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,options,message", [
    ("fcn", {"variant": "x"}, "models.fcn.options.variant: must be one of fcn32s, fcn8s, got 'x'"),
    ("deeplab", {"aux_loss": "yes"}, "models.deeplab.options.aux_loss: must be true or false, got 'yes'"),
])  # every other option message: tests/test_params.py, through the same schema
def test_bad_options_are_one_line_errors(name, options, message):
    with pytest.raises(PipelineError) as error:
        build(name, num_classes=21, **options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_messages_use_the_callers_prefix():
    with pytest.raises(PipelineError, match=r"^models\.small_unet\.options\.width: "):
        build("unet", num_classes=21, width=-1, where="models.small_unet")


def test_set_batchnorm_momentum_reaches_every_batchnorm_layer():
    model = build("deeplab", num_classes=21, backbone="mobilenet_v3_large")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.momentum for m in norms} >= {0.01}  # torchvision's MobileNetV3 setting
    assert set_batchnorm_momentum(model, 0.1) == len(norms) > 0
    assert {m.momentum for m in norms} == {0.1}
