"""The registered losses: cross-entropy as torch computes it (the default, byte for byte), class weights (`auto`:
ENet's inverse log frequency of the training split), OHEM as mmsegmentation samples it, and
segmentation_models_pytorch's Dice, Focal and Lovász in multiclass mode; every one skips void, and a loss list
trains and is recorded in MLflow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX
from pipeline.core.params.schema import build
from pipeline.core.params.train import TrainParams
from pipeline.prepared.balance import class_weights
from pipeline.prepared.dataset import PreparedSplit
from pipeline.training.losses import Ohem, hard_pixels, make_loss, names

REPO = Path(__file__).resolve().parents[1]
CLASSES = 4


def recipe(*loss: dict, aux_weight: float = 0.4) -> TrainParams:
    return build(TrainParams, {"loss": list(loss), "aux_weight": aux_weight}, "train")


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (2, 12, 16), generator=generator)
    labels[:, :2] = IGNORE_INDEX
    return torch.randn(2, CLASSES, 12, 16, generator=generator), labels


def test_the_default_is_torchs_cross_entropy_bit_for_bit_with_the_aux_head():
    logits, labels = batch()
    aux = torch.randn_like(logits)
    loss = make_loss(TrainParams(), CLASSES)({"out": logits, "aux": aux}, labels)
    expected = (F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
                + 0.4 * F.cross_entropy(aux, labels, ignore_index=IGNORE_INDEX))
    assert torch.equal(loss, expected)


@pytest.mark.parametrize("entry", [{"name": name} for name in names()] +
                         [{"name": "cross_entropy", "class_weights": "auto"},
                          {"name": "cross_entropy", "ohem": {"thresh": 0.7, "min_kept": 10}}],
                         ids=lambda entry: "-".join(str(v) for v in entry.values() if not isinstance(v, dict)))
def test_every_loss_is_lower_for_right_logits_ignores_void_and_has_gradients(entry):
    logits, labels = batch()
    loss = make_loss(recipe(entry), CLASSES, class_pixels=[500, 100, 20, 1])
    right = F.one_hot(labels.clamp(max=CLASSES - 1), CLASSES).permute(0, 3, 1, 2).float() * 8.0
    assert loss(right, labels) < loss(logits, labels)
    moved = logits.clone()
    moved[:, :, :2] = torch.randn_like(moved[:, :, :2]) * 5  # only void pixels change
    torch.testing.assert_close(loss(moved, labels), loss(logits, labels))
    logits.requires_grad_(True)
    loss(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert logits.grad[:, :, :2].abs().sum() == 0


def test_auto_class_weights_are_enets_inverse_log_frequency_of_the_training_split():
    pixels = [900, 90, 10, 0]
    weights = class_weights(pixels)
    assert weights == pytest.approx([1 / math.log(1.02 + p / 1000) for p in pixels])
    assert weights[3] == pytest.approx(1 / math.log(1.02)) and weights[0] < weights[1] < weights[2] < weights[3]
    logits, labels = batch()
    loss = make_loss(recipe({"name": "cross_entropy", "class_weights": "auto"}), CLASSES, class_pixels=pixels)
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(weights), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss(logits, labels), expected)


@pytest.mark.parametrize("entry, pixels, message", [
    ({"name": "cross_entropy", "class_weights": [1.0, 2.0]}, None,
     r"^train.loss\[0\].class_weights: 2 weights for 4 classes"),
    ({"name": "cross_entropy", "class_weights": "auto"}, None,
     r"^train.loss\[0\].class_weights: auto needs the training split's class pixels"),
])
def test_class_weights_that_do_not_fit_are_one_line(entry, pixels, message):
    with pytest.raises(PipelineError, match=message):
        make_loss(recipe(entry), CLASSES, class_pixels=pixels)


@pytest.mark.parametrize("entry, message", [
    ({"name": "cross_entropy", "class_weights": "balanced"},
     r"train.loss\[0\].class_weights: must be auto or a list or null, got 'balanced'"),
    ({"name": "cross_entropy", "ohem": {"thresh": 0}}, r"train.loss\[0\].ohem.thresh: must be > 0, got 0"),
    ({"name": "focal", "alpha": 0.25}, r"train.loss\[0\].alpha: unknown key; allowed keys here: gamma"),
    ({"name": "tversky"}, r"train.loss\[0\].name: unknown loss 'tversky'; must be one of cross_entropy, dice"),
])
def test_a_loss_or_option_that_does_not_exist_is_one_line(entry, message):
    with pytest.raises(PipelineError, match=message):
        make_loss(recipe(entry), CLASSES)


def test_ohem_keeps_the_pixels_below_the_threshold_and_at_least_min_kept():
    labels = torch.zeros(1, 1, 10, dtype=torch.long)
    labels[0, 0, 9] = IGNORE_INDEX
    confidence = torch.linspace(-3, 3, 10)  # the probability of class 0 grows along the row
    logits = torch.stack([confidence, torch.zeros(10)]).reshape(1, 2, 1, 10)
    probability = logits.softmax(1)[0, 0, 0]
    kept = hard_pixels(logits, labels, Ohem(thresh=0.7, min_kept=1)) != IGNORE_INDEX
    assert kept[0, 0].tolist() == [bool(p < 0.7) for p in probability[:9]] + [False]
    # min_kept above what the threshold keeps raises the threshold to the min_kept-th smallest probability
    kept = hard_pixels(logits, labels, Ohem(thresh=0.1, min_kept=7)) != IGNORE_INDEX
    assert kept.sum() == 7 and kept[0, 0, :7].all()
    loss = make_loss(recipe({"name": "cross_entropy", "ohem": {"thresh": 0.7, "min_kept": 1}}), 2)(logits, labels)
    hard = probability[:9] < 0.7
    torch.testing.assert_close(loss, -probability[:9][hard].log().mean())


def test_a_cross_entropy_run_never_imports_segmentation_models_pytorch():
    code = ("import sys; from pipeline.core.params.train import TrainParams; "
            "from pipeline.training.losses import make_loss; make_loss(TrainParams(), 21); "
            "print('segmentation_models_pytorch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_loss_list_trains_and_is_recorded_in_mlflow(voc_prepared, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from test_train import tiny_job

    from pipeline.training.loop import train_model

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    loss = [{"name": "cross_entropy", "weight": 1.0, "class_weights": "auto"}, {"name": "dice", "weight": 0.5}]
    result = train_model(tiny_job(epochs=1, loss=loss), prepared=voc_prepared, checkpoint_dir=tmp_path / "c",
                         progress=False)
    assert math.isfinite(result.history[0]["loss"])
    logged = json.loads(MlflowClient(tracking_uri=store).get_run(result.run_id).data.params["train.loss"])
    assert [(term["name"], term["weight"]) for term in logged] == [("cross_entropy", 1.0), ("dice", 0.5)]
    pixels = PreparedSplit(voc_prepared, "train").class_pixels
    assert logged[0]["class_weights"] == [round(w, 6) for w in class_weights(pixels)] and len(pixels) == 21
    assert logged[0]["ohem"] is None and logged[1] == {"name": "dice", "weight": 0.5, "smooth": 0.0}
