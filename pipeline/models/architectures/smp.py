"""segmentation_models_pytorch's networks (UNet++, FPN, PSPNet, UPerNet, SegFormer, DPT, …) over any encoder it
accepts, its own or timm's (`tu-<timm model>`), as one architecture of this pipeline: `arch` and `encoder` name
them as `segmentation_models_pytorch.create_model` does.

Those networks refuse an input whose sides are not multiples of their encoder's output stride (32 for most): the
wrapper pads the normalised image at the bottom and right with zeros (the mean colour) to the next multiple and
crops the logits back, so every image size works in training, evaluation, prediction, serving and the ONNX graph.

The library (and timm) is imported with this module, which the registry imports only for a model whose
architecture is `smp`: an FCN's stages never load it.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import segmentation_models_pytorch
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.errors import PipelineError, first_line
from pipeline.models import weights
from pipeline.models.registry import register_model

TIMM_PREFIX = "tu-"  # segmentation_models_pytorch's prefix of a timm encoder: tu-<timm model name>


@functools.cache
def arch_names() -> dict[str, str]:
    """Lower-case name → the class name `create_model` builds (Unet, UnetPlusPlus, …, Segformer, DPT)."""
    return {name: cls.__name__ for name, cls in segmentation_models_pytorch.MODEL_ARCHITECTURES_MAPPING.items()}


@functools.cache
def encoder_names() -> tuple[str, ...]:
    """segmentation_models_pytorch's own encoders, then every timm model as `tu-<name>`."""
    own = [name for name in segmentation_models_pytorch.encoders.get_encoder_names() if not name.startswith("timm-")]
    return tuple(own) + tuple(TIMM_PREFIX + name for name in timm.list_models())


def known_encoder(name: str) -> bool:
    """One of the library's encoders, or a timm model with or without its pretrained tag (`tu-vit_small_patch16_224`
    or `tu-vit_small_patch16_224.augreg_in21k`)."""
    if name.startswith(TIMM_PREFIX):
        return timm.is_model(name[len(TIMM_PREFIX):].split(".")[0])
    return name in encoder_names()


def _close(name: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"close names: {', '.join(close)}" if close else "no close name"


@dataclass(frozen=True)
class SmpOptions:
    """`models.<name>.options` of a segmentation_models_pytorch network: `arch` (any of `create_model`'s
    architectures, any case), `encoder` (its encoders, or `tu-<timm model>`) and `encoder_weights` (imagenet,
    none, or a local file of the encoder's weights pinned by `weights_sha256`)."""

    arch: str = "Unet"
    encoder: str = "resnet34"
    encoder_weights: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        canonical = arch_names().get(self.arch.lower())
        if canonical is None:
            raise PipelineError(f"arch: segmentation_models_pytorch has no architecture {self.arch!r} "
                                f"({_close(self.arch, list(arch_names().values()))}); one of "
                                f"{', '.join(arch_names().values())}")
        object.__setattr__(self, "arch", canonical)
        if not known_encoder(self.encoder):
            raise PipelineError(f"encoder: segmentation_models_pytorch has no encoder {self.encoder!r} "
                                f"({_close(self.encoder, encoder_names())}); its own encoders or tu-<timm model>")
        weights.check_source(self.encoder_weights, self.weights_sha256, key="encoder_weights")

    @property
    def summary(self) -> str:
        """For run names: `Segformer-mit_b0`."""
        return f"{self.arch}-{self.encoder}"


def create(options: SmpOptions, num_classes: int, encoder_weights: str | bool | None = None, **kwargs) -> nn.Module:
    """segmentation_models_pytorch's network for `options`, its encoder random unless `encoder_weights` says. A
    ViT encoder (DPT's) is built for any image size, not only its pretraining's."""
    if options.arch == "DPT":
        kwargs.setdefault("dynamic_img_size", True)
    return segmentation_models_pytorch.create_model(options.arch, encoder_name=options.encoder,
                                                    encoder_weights=encoder_weights, classes=num_classes, **kwargs)


class PaddedToStride(nn.Module):
    """The project's forward contract over a segmentation_models_pytorch network: logits at the input's size for
    any size. The input is zero-padded at the bottom and right to a multiple of `multiple`, and the logits cropped
    back; `network` is the library's model, its encoder at `network.encoder` (the backbone fine-tuning freezes)."""

    def __init__(self, network: nn.Module, multiple: int) -> None:
        super().__init__()
        self.network = network
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        padded_height = (height + self.multiple - 1) // self.multiple * self.multiple
        padded_width = (width + self.multiple - 1) // self.multiple * self.multiple
        logits = self.network(F.pad(x, (0, padded_width - width, 0, padded_height - height)))
        return logits[..., :height, :width]


def input_multiple(options: SmpOptions, network: nn.Module) -> int:
    """What the library's own check demands of the input's sides; DPT's decoder also halves its grid of patches
    once, so that grid's sides must be even."""
    if not getattr(network, "requires_divisible_input_shape", True):
        return 1
    return network.encoder.output_stride * (2 if options.arch == "DPT" else 1)


def load_encoder_weights(model: PaddedToStride, options: SmpOptions, where: str) -> None:
    """ImageNet weights of the encoder (from the Hugging Face hub through the library, or a local file pinned by
    sha256): its own encoders take the library's `model.safetensors` of that encoder (or its `encoder.state_dict()`
    saved by torch), timm's (`tu-`) a timm checkpoint of that model, which timm itself filters."""
    key = f"{where}.encoder_weights"
    weights.check_local(options.encoder_weights, options.weights_sha256, where, key="encoder_weights")
    if options.encoder_weights == "none":
        return
    encoder = model.network.encoder
    timm_encoder = options.encoder.startswith(TIMM_PREFIX)
    if options.encoder_weights == "imagenet":
        loaded = _with_library_weights(options, True if timm_encoder else "imagenet", key)
    else:
        path = Path(options.encoder_weights)
        weights.pinned(path, options.weights_sha256, f"{where}.weights_sha256",
                       "refusing to load it (replace the file or update weights_sha256)")
        if timm_encoder:
            loaded = _with_library_weights(options, True, key, pretrained_cfg_overlay={"file": str(path)})
        else:
            state = _read_state(path, key)
            try:
                encoder.load_state_dict(state)
            except RuntimeError as error:
                raise PipelineError(f"{key}: {path} is not the weights of encoder {options.encoder}: "
                                    f"{first_line(error)}") from None
            return
    encoder.load_state_dict(loaded.encoder.state_dict())


def _with_library_weights(options: SmpOptions, encoder_weights: str | bool, key: str, **kwargs) -> nn.Module:
    """A second network whose encoder the library (or timm) loaded; offline, one line saying what to do."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create(options, num_classes=1, encoder_weights=encoder_weights, **kwargs)
    except Exception as error:  # noqa: BLE001 - hub, network, file and format errors alike end here
        if "file" in kwargs:
            raise PipelineError(f"{key}: {kwargs['pretrained_cfg_overlay']['file']} cannot be loaded as timm's "
                                f"{options.encoder[len(TIMM_PREFIX):]}: {first_line(error)}") from None
        raise PipelineError(
            f"{key}: imagenet weights for {options.encoder} could not be downloaded ({first_line(error)}); "
            f"fetch them elsewhere ({_weights_url(options.encoder)}) and give the file's path as encoder_weights "
            "with weights_sha256, or set encoder_weights: none"
        ) from None


def _weights_url(encoder: str) -> str:
    if encoder.startswith(TIMM_PREFIX):
        return f"timm's pretrained {encoder[len(TIMM_PREFIX):]}, https://huggingface.co/timm"
    settings = segmentation_models_pytorch.encoders.encoders[encoder]["pretrained_settings"].get("imagenet")
    if settings is None:
        return f"the library lists no imagenet weights for {encoder}"
    return f"https://huggingface.co/{settings['repo_id']}/resolve/{settings['revision']}/model.safetensors"


def _read_state(path: Path, key: str) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a bad zip, a refused pickle, a text file: all "not weights"
        raise PipelineError(f"{key}: {path} cannot be read as weights ({first_line(error)})") from None
    if not isinstance(state, dict):
        raise PipelineError(f"{key}: {path} holds a {type(state).__name__}, not a state dict")
    return state


@register_model("smp", SmpOptions, load_weights=load_encoder_weights, backbone="network.encoder", tested=2, variants={
    "UNet++ ResNet-18": {"arch": "UnetPlusPlus", "encoder": "resnet18"},
    "SegFormer MiT-B0": {"arch": "Segformer", "encoder": "mit_b0"},
    "SegFormer MiT-B2": {"arch": "Segformer", "encoder": "mit_b2"},
    "FPN ResNet-50": {"arch": "FPN", "encoder": "resnet50"},
    "PSPNet ResNet-50": {"arch": "PSPNet", "encoder": "resnet50"},
    "UPerNet ResNet-50": {"arch": "UPerNet", "encoder": "resnet50"},
    "DeepLabV3+ ResNet-50": {"arch": "DeepLabV3Plus", "encoder": "resnet50"},
    "DPT ViT-S/16": {"arch": "DPT", "encoder": "tu-vit_small_patch16_224.augreg_in21k"},
})
def build_smp(options: SmpOptions, num_classes: int) -> PaddedToStride:
    """The network, or one line when the library refuses this architecture over this encoder (DPT wants a ViT)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the library's notes on deprecated encoder names and weight arguments
            network = create(options, num_classes)
    except Exception as error:  # noqa: BLE001 - the library's refusal of this pair, whatever its type
        raise PipelineError(f"options: segmentation_models_pytorch cannot build {options.arch} over "
                            f"{options.encoder}: {first_line(error)}") from None
    return PaddedToStride(network, input_multiple(options, network))
