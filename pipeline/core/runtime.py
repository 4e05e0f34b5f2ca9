"""The runtime policy: which device, which autocast precision, which memory format, whether to compile.

Decided once, here, from params and the command line, and used as is by training, evaluation, prediction and
the bench, so that no module re-derives "bf16 on CUDA" with its own rule. The measurements behind each choice are
in docs/performance.md.

- bf16 autocast on CUDA only: no loss scaling needed (unlike fp16); on the CPU bf16 autocast is slower than fp32
  on most machines and would change the CPU results every test and rerun compares byte for byte.
- channels_last wherever params ask for it (params.yaml does): cuDNN's convolutions are faster in NHWC, and so are
  most of oneDNN's on the CPU. It changes the CPU's rounding, not its determinism: reruns on one machine stay
  byte-identical.
- cudnn.benchmark for training, whose crops all have one size, so the autotuning is paid once; never while
  evaluating (`without_autotuning`): VOC val has hundreds of image sizes, and each new one would be autotuned.
- On CUDA a network with depthwise convolutions (MobileNetV3) predicts in fp32 and NCHW, however it trained: in
  channels-last cuDNN runs its depthwise convolutions and sets up each new input shape at a cost far above the
  prediction itself, while in NCHW PyTorch's own depthwise kernel needs no set-up.
- torch.compile on CUDA only, where params ask for it (DeepLab R50 in params.yaml); on the CPU it would cost
  minutes of compiling per process and change the results the tests compare byte for byte.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

import torch

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: full precision
    channels_last: bool = False
    compile: bool = False

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def peak_memory_mb(self) -> float:
        """The device's peak: tensors allocated on the GPU since the last reset, else the process's peak RSS."""
        if self.on_gpu:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20

    @property
    def memory_format(self) -> torch.memory_format:
        # contiguous rather than preserve: a network placed in channels-last once (the bench places one network under
        # several policies) would otherwise stay so, and cuDNN runs NHWC when the weights alone are channels-last
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def place_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` on the device, in the memory format its inputs will have."""
        return model.to(self.device, memory_format=self.memory_format)

    def place_input(self, batch: torch.Tensor) -> torch.Tensor:
        """A float N×3×H×W batch (already on the device) in the policy's memory format."""
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    @contextlib.contextmanager
    def without_autotuning(self):
        """cudnn.benchmark off for the block (in-loop validation runs inside a training process that turned it on),
        then back as it was."""
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = previous

    def synchronize(self) -> None:
        """Wait for queued GPU work, so that a timer measures it."""
        if self.on_gpu:
            torch.cuda.synchronize(self.device)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """`auto` → the local rank's GPU when CUDA is usable, else the CPU; `cuda` under torchrun → `cuda:<local_rank>`."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PipelineError(
                f"device {spec!r} asked for, but no CUDA GPU is visible to torch "
                "(torch.cuda.is_available() is False): use --device cpu or train.device: auto"
            )
        index = int(spec.split(":")[1]) if ":" in spec else local_rank
        if index >= torch.cuda.device_count():
            raise PipelineError(f"device cuda:{index} asked for, but only {torch.cuda.device_count()} GPU(s) "
                                "are visible")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def resolve(device: str | torch.device = "auto", *, amp: bool = True, channels_last: bool = True,
            compile: bool = False, training: bool = False, local_rank: int = 0,
            network: torch.nn.Module | None = None) -> Runtime:
    """The policy for `device` (a spec such as auto, cpu, cuda:1, or a torch.device): `amp`, `channels_last` and
    `compile` are what params ask for; amp and compile are granted on CUDA only, and on CUDA a `network` to predict
    with that has depthwise convolutions gets fp32 and NCHW (see the module docstring)."""
    device = device if isinstance(device, torch.device) else resolve_device(device, local_rank)
    on_gpu = device.type == "cuda"
    if on_gpu and training:
        torch.backends.cudnn.benchmark = True
    if on_gpu and not training and network is not None and has_depthwise_convolutions(network):
        amp = channels_last = False
    return Runtime(device=device, autocast_dtype=torch.bfloat16 if amp and on_gpu else None,
                   channels_last=channels_last, compile=compile and on_gpu)


def has_depthwise_convolutions(network: torch.nn.Module) -> bool:
    return any(isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
               for module in network.modules())
