"""The runtime policy, decided once: what each device gets of amp, channels_last and compile."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.runtime import resolve


def test_cpu_gets_full_precision_and_the_memory_format_asked_for():
    policy = resolve("cpu", amp=True, channels_last=True, compile=True)
    assert policy.device == torch.device("cpu") and policy.autocast_dtype is None and policy.channels_last
    assert not policy.compile  # asked for, but granted on CUDA only
    net = policy.place_model(torch.nn.Conv2d(3, 4, 3))
    batch = policy.place_input(torch.zeros(2, 3, 8, 8))
    assert net.weight.is_contiguous(memory_format=torch.channels_last)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with policy.autocast():
        assert net(batch).dtype == torch.float32

    plain = resolve("cpu", channels_last=False)
    assert not plain.channels_last
    assert plain.place_model(torch.nn.Conv2d(3, 4, 3)).weight.is_contiguous()
    assert plain.place_input(torch.zeros(2, 3, 8, 8)).is_contiguous()


def test_a_resolved_device_is_kept():
    assert resolve(torch.device("cpu")).device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(PipelineError, match="no CUDA GPU is visible"):
        resolve("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gets_bf16_autocast_and_channels_last():
    policy = resolve("cuda", amp=True, channels_last=True)
    assert policy.autocast_dtype == torch.bfloat16 and policy.channels_last and policy.on_gpu
    assert resolve("cuda", amp=False).autocast_dtype is None


def test_a_placed_network_takes_the_memory_format_of_its_policy_whatever_it_had():
    """The bench places one network under several policies: NCHW after channels-last must be NCHW again (cuDNN
    runs channels-last when the weights alone are)."""
    net = resolve("cpu", channels_last=True).place_model(torch.nn.Conv2d(3, 4, 3))
    assert not resolve("cpu", channels_last=False).place_model(net).weight.is_contiguous(
        memory_format=torch.channels_last)


def test_on_cuda_a_network_with_depthwise_convolutions_predicts_in_fp32_and_nchw(monkeypatch):
    """cuDNN sets up each new input shape of a channels-last depthwise convolution in ~0.15 s, and VOC val has
    hundreds of sizes; PyTorch's own NCHW depthwise kernel needs no set-up. Training (one crop size) and every
    other network keep what params ask for. A torch.device is taken as is, so no GPU is needed to check this."""
    from pipeline.core.runtime import has_depthwise_convolutions
    from pipeline.models.registry import build

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # resolve(training=True) turns it on
    cuda = torch.device("cuda")
    mobilenet = build("deeplab", num_classes=21, backbone="mobilenet_v3_large", aux_loss=False, pretrained="none")
    resnet = build("deeplab", num_classes=21, backbone="resnet18", pretrained="none")
    assert has_depthwise_convolutions(mobilenet)
    assert not any(has_depthwise_convolutions(net) for net in (resnet, build("fcn", num_classes=21, pretrained="none"),
                                                               build("unet", num_classes=21, width=8)))
    predicting = resolve(cuda, network=mobilenet)
    assert predicting.autocast_dtype is None and not predicting.channels_last
    for policy in (resolve(cuda, network=resnet), resolve(cuda, network=mobilenet, training=True), resolve(cuda)):
        assert policy.autocast_dtype == torch.bfloat16 and policy.channels_last
    assert resolve("cpu", network=mobilenet).channels_last  # the CPU's choice is params', as before


def test_evaluation_never_autotunes_and_training_keeps_its_setting(monkeypatch):
    """Validation inside a training process must not autotune each of VOC's image sizes; afterwards training's
    cudnn.benchmark is back as it was."""
    import torch

    from pipeline.core.labels import VOC_LABELS
    from pipeline.core.runtime import resolve
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.models.registry import build

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build("unet", num_classes=21, width=4)

        def forward(self, x):
            seen.append(torch.backends.cudnn.benchmark)
            return self.net(x)

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    images = [(torch.zeros(3, h, 20, dtype=torch.uint8), torch.zeros(h, 20, dtype=torch.uint8)) for h in (16, 24)]
    evaluate(Recorder(), images, resolve("cpu"), labels=VOC_LABELS)
    assert seen == [False, False]
    assert torch.backends.cudnn.benchmark is True
