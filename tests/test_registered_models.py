"""What every registered architecture must do, run over each one's first (small) variant: a new architecture is
one file in pipeline/models/architectures/ plus its params entry, and these tests pick it up. Its own behaviour
(skips, decoders, weights) goes in tests/test_models.py.

The generic contract: logits of the input's size for any input size, in train and eval mode; it learns on a fixed
batch; it exports to ONNX and agrees with PyTorch at sizes other than the traced one; its options survive the
registry and the model file; and the stages that use it depend on its own file, not on another architecture's."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from devtools.deps import architecture_closure, architecture_files
from pipeline.core.errors import PipelineError
from pipeline.core.labels import LabelSet
from pipeline.core.params.export import ExportParams
from pipeline.export.onnx_export import export_checked
from pipeline.models.registry import architecture, build, names, typed_options
from pipeline.models.saved import load_saved, save_model, saved_labels

torch.set_num_threads(1)  # two shared cores: these networks are small at these sizes

ARCHITECTURES = names()
# (architecture, variant) for every variant the generic tests run over: each architecture's first, smp's two.
TESTED = [(name, variant) for name in ARCHITECTURES for variant in architecture(name).tested_variants()]
CLASSES = 5  # not VOC's 21: nothing may assume a dataset's class count
LABELS = LabelSet.of("shapes", [f"class{i}" for i in range(CLASSES)])


def options_of(name: str, variant: str):
    return typed_options(name, architecture(name).variants[variant])


@functools.cache
def small_model(name: str, variant: str) -> nn.Module:
    torch.manual_seed(0)
    return build(name, options_of(name, variant), num_classes=CLASSES)


def test_every_architecture_module_registers_itself_under_its_own_name():
    assert ARCHITECTURES == sorted(architecture_files())
    for name in ARCHITECTURES:
        spec = architecture(name)
        assert spec.name == name and spec.variants
        assert dataclasses.is_dataclass(spec.options) and isinstance(typed_options(name).summary, str)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_no_architecture_imports_another(name):
    """Code two architectures share lives in a shared module (pipeline/models/layers.py): an architecture's stages
    depend on its own file, so one importing another's would make an edit there retrain both without DVC knowing."""
    others = set(architecture_files().values()) - {architecture_files()[name]}
    assert not architecture_closure(name) & others


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (33, 47)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(("name", "variant"), TESTED)
def test_any_input_size_gives_input_sized_logits(name, variant, size, training):
    model = small_model(name, variant).train(training)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    outputs = out if isinstance(out, dict) else {"out": out}
    assert set(outputs) <= {"out", "aux"} and "out" in outputs
    assert isinstance(out, torch.Tensor) or training  # {"out", "aux"} only in training
    for logits in outputs.values():
        assert tuple(logits.shape) == (2, CLASSES, *size)


def fixed_batch(classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64×64 images of 16×16 blocks, each block a random class drawn in its own colour plus noise, with a void
    band: learnable by any network whose output stride is at most 16."""
    generator = torch.Generator().manual_seed(0)
    colours = torch.randn(classes, 3, generator=generator)
    blocks = torch.randint(0, classes, (2, 4, 4), generator=generator)
    labels = blocks.repeat_interleave(16, dim=1).repeat_interleave(16, dim=2)
    x = colours[labels].permute(0, 3, 1, 2) + 0.3 * torch.randn(2, 3, 64, 64, generator=generator)
    labels[:, :, :6] = 255
    return x, labels


def assert_learns(model: nn.Module, classes: int) -> None:
    """Adam halves the loss on `fixed_batch` within 100 steps and gradients reach every trainable parameter within
    two (a ResNet block's branch gets them once the first step has moved its zero-initialised last BatchNorm
    scale). The margin is wide on purpose, so that no CPU's rounding or thread count can flip the outcome."""
    model.train()
    x, labels = fixed_batch(classes)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, reached = [], set()
    while not losses or (losses[-1] >= 0.5 * losses[0] and len(losses) <= 100):
        torch.manual_seed(len(losses))  # reproducible dropout and stochastic-depth masks, new at each step
        out = model(x)
        loss = sum(criterion(logits, labels) for logits in (out.values() if isinstance(out, dict) else [out]))
        optimizer.zero_grad()
        loss.backward()
        if len(losses) < 2:
            reached |= {key for key, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
        losses.append(loss.item())
    assert [key for key, p in model.named_parameters() if p.requires_grad and key not in reached] == []
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize(("name", "variant"), TESTED)
def test_it_learns_on_a_fixed_batch(name, variant):
    torch.manual_seed(0)
    assert_learns(build(name, options_of(name, variant), num_classes=CLASSES), CLASSES)


@pytest.mark.parametrize(("name", "variant"), TESTED)
def test_it_exports_to_onnx_and_agrees_with_pytorch_at_other_sizes(name, variant, tmp_path):
    report = export_checked(small_model(name, variant).eval(), tmp_path / f"{name}.onnx",
                            ExportParams(check_sizes=[[333, 427], [72, 88]]))
    assert report["agreement"] >= 0.999 and report["max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize(("name", "variant"), TESTED)
def test_options_round_trip_through_the_registry_and_the_model_file(name, variant, tmp_path):
    options = options_of(name, variant)
    assert typed_options(name, dataclasses.asdict(options)) == options  # what the model file stores reads back
    model = small_model(name, variant).eval()
    save_model(tmp_path / "model.pt", model, architecture=name, options=options, labels=LABELS)
    loaded, labels = load_saved(tmp_path / "model.pt")
    assert labels == LABELS == saved_labels(tmp_path / "model.pt")
    assert type(loaded) is type(model)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_an_unknown_architecture_lists_the_registered_ones():
    with pytest.raises(PipelineError) as error:
        build("segformer", num_classes=CLASSES)
    assert str(error.value) == (f"models.segformer.architecture: unknown architecture 'segformer'; must be one of "
                                f"{', '.join(ARCHITECTURES)}")


def test_the_class_count_is_required_and_checked():
    with pytest.raises(TypeError):
        build("unet", width=4)  # no default: a dataset's class count, never VOC's by accident
    with pytest.raises(PipelineError, match="num_classes: must be a positive integer, got 0"):
        build("unet", num_classes=0)
