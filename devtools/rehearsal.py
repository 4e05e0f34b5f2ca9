"""`make rehearse`: what a real run costs, measured with the real stages on a generated dataset shaped like VOC.

The generated archive has VOC 2012's split sizes (1,464 train / 1,449 val) and image sizes (500 px on the long side,
281–500 on the short), and goes through the real `extract` and `prepare` stages (train_set: train, so no SBD).
Then, per model, the real `train` stage runs `epochs` epochs of the params file's recipe (pretrained weights off:
nothing is downloaded, and the speed is the same) and the real `evaluate` stage scores every val image. Two epochs
by default: the first pays what a training process pays once (torch.compile's compilation, cuDNN's autotuning,
the first batches' allocations), the last is the steady pace a full run keeps. Each stage
is a separate process, as under `dvc repro`, timed from outside; MLflow is pointed at a closed port, so tracking
turns itself off and costs nothing.

From the measured throughput it estimates a full `make repro` of the params file's recipe: the first epoch's
one-off cost, its epochs over VOC trainaug (10,582 images) at the last epoch's pace, its in-loop validations, and
the final evaluation.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from devtools.synthetic import write_voc_tar
from pipeline.core.errors import PipelineError
from pipeline.core.params.whole import parse

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
VOC_TRAIN, VOC_VAL, TRAINAUG = 1464, 1449, 10582
VOC_SIZES = (281, 500)  # short side drawn in [281, 500], long side 500
UNTRACKED = "http://127.0.0.1:9"  # the discard port: refused at once, so tracking is off without waiting


def rehearsal_params(base: dict, models: list[str], epochs: int) -> dict:
    """`base` (params.yaml as a dict) cut to `models` and `epochs`, with no SBD and no weight downloads."""
    raw = json.loads(json.dumps(base))
    unknown = sorted(set(models) - set(raw["models"]))
    if unknown:
        raise PipelineError(f"rehearse: no model {', '.join(unknown)} in the params file "
                            f"(it has {', '.join(raw['models'])})")
    raw["models"] = {key: raw["models"][key] for key in models}
    for model in raw["models"].values():
        if "pretrained" in (model.get("options") or {}):
            model["options"]["pretrained"] = "none"
    raw["prepare"]["train_set"] = "train"
    raw["train"]["epochs"] = epochs
    for model in raw["models"].values():
        (model.get("train") or {}).pop("epochs", None)
    parse(raw, source="rehearsal params")  # fail here, not in a stage
    return raw


def _stage(workdir: Path, *args: str) -> float:
    """Run `python -m <stage> …` in `workdir` as DVC would; its wall-clock seconds."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MLFLOW_TRACKING_URI": UNTRACKED}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", *args], cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode < 0:  # SIGKILL from the kernel's OOM killer is the usual one: it leaves no traceback
        hint = " (out of memory? try a smaller train.batch_size or crop)" if result.returncode == -9 else ""
        raise PipelineError(f"rehearse: `{' '.join(args[:3])}` was killed by signal {-result.returncode}{hint}")
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise PipelineError(f"rehearse: `{' '.join(args[:3])}` exited {result.returncode}: {' | '.join(tail)}")
    return seconds


def estimate_full_run(recipe: dict, train_img_s: float, eval_img_s: float, one_off_s: float = 0.0) -> dict:
    """Hours of `make repro` for one model with the params file's own epochs and val_every, on VOC trainaug:
    `one_off_s` once, every epoch at `train_img_s`, every validation and the final evaluation at `eval_img_s`."""
    epochs, val_every = recipe["epochs"], recipe.get("val_every", 1)
    validations = len({*range(val_every, epochs + 1, val_every), epochs})
    seconds = one_off_s + epochs * TRAINAUG / train_img_s + (validations + 1) * VOC_VAL / eval_img_s
    return {"epochs": epochs, "validations": validations, "train_images": TRAINAUG, "hours": seconds / 3600}


def run(workdir: Path, *, models: list[str], base_params: dict, epochs: int = 2, n_train: int = VOC_TRAIN,
        n_val: int = VOC_VAL, sizes: tuple[int, int] = VOC_SIZES, device: str = "auto", seed: int = 0,
        on_progress: Callable[[dict], None] = lambda results: None) -> dict:
    """Generate, extract and prepare the VOC-shaped data in `workdir`, then train and evaluate each model;
    `on_progress(results so far)` after the data and after each model, so that a run cut short keeps them."""
    workdir.mkdir(parents=True, exist_ok=True)
    params = rehearsal_params(base_params, models, epochs)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    write_voc_tar(workdir / "voc.tar", seed=seed, n_train=n_train, n_val=n_val, min_size=sizes[0],
                  max_size=sizes[1], voc_shaped=True)
    data = {"generate_seconds": time.perf_counter() - started, "train_images": n_train, "val_images": n_val,
            "sizes": list(sizes)}
    data["extract_seconds"] = _stage(workdir, "stages.extract", "--archive", "voc.tar", "--out", "data/source")
    (workdir / "data/SBD").mkdir(parents=True, exist_ok=True)
    data["prepare_seconds"] = _stage(workdir, "stages.prepare", "--source", "data/source", "--sbd", "data/SBD",
                                     "--out", "data/prepared", "--metrics", "metrics/data.json")
    results: dict[str, Any] = {"data": data, "epochs": epochs, "device": device, "models": {}}
    on_progress(results)
    for key in models:
        try:
            results["models"][key] = _rehearse_model(workdir, key, params, base_params, n_train, device)
        except PipelineError as error:  # one model that does not fit (memory) does not hide the others' numbers
            log.error("%s", error)
            results["models"][key] = {"error": str(error)}
        on_progress(results)
    return results


def _rehearse_model(workdir: Path, key: str, params: dict, base_params: dict, n_train: int, device: str) -> dict:
    log.info("rehearse: training %s", key)
    paths = ["--model-file", f"models/{key}/model.pt", "--run-file", f"models/{key}/mlflow_run.json"]
    train_s = _stage(workdir, "stages.train", "--model", key, "--device", device, "--no-progress", *paths,
                     "--checkpoints", f"checkpoints/{key}", "--history", f"metrics/train/{key}.csv",
                     "--summary", f"metrics/train/{key}.json")
    log.info("rehearse: evaluating %s", key)
    eval_s = _stage(workdir, "stages.evaluate", "--model", key, "--device", device, *paths,
                    "--predictions", f"predictions/{key}", "--metrics", f"metrics/{key}.json",
                    "--per-class", f"metrics/{key}/per_class.csv", "--confusion", f"metrics/{key}/confusion.csv",
                    "--speed", f"metrics/{key}/speed.json")
    summary = json.loads((workdir / f"metrics/train/{key}.json").read_text())
    with open(workdir / f"metrics/train/{key}.csv", newline="") as history:
        paces = [float(row["images_per_second"]) for row in csv.DictReader(history)]
    speed = json.loads((workdir / f"metrics/{key}/speed.json").read_text())
    recipe = {**params["train"], **(params["models"][key].get("train") or {})}
    # With one epoch there is no steady pace to tell the one-off cost from: it stays inside the pace.
    one_off = max(0.0, n_train / paces[0] - n_train / paces[-1]) if len(paces) > 1 else None
    return {
        "device": summary["device"],
        "train_stage_seconds": train_s,
        "seconds_per_epoch": n_train / paces[-1],
        "first_epoch_seconds": n_train / paces[0],
        "one_off_seconds": one_off,
        "train_images_per_second": paces[-1],
        "train_peak_memory_mb": summary["peak_memory_mb"],
        "evaluate_stage_seconds": eval_s,
        "evaluate_images_per_second": speed["images_per_second"],
        "evaluate_peak_memory_mb": speed["peak_memory_mb"],
        "full_run_estimate": estimate_full_run({**base_params["train"],
                                                **(base_params["models"][key].get("train") or {})},
                                               paces[-1], speed["images_per_second"], one_off or 0.0),
        "recipe": {name: recipe[name] for name in ("batch_size", "crop_size", "amp", "compile")},
    }


def markdown(results: dict) -> str:
    data = results["data"]
    short, long = data["sizes"]
    out = [f"**rehearsal**: {data['train_images']} train / {data['val_images']} val generated images, long side "
           f"{long} px, short {short}–{long}; prepare {data['prepare_seconds']:.0f} s; {results['epochs']} epoch(s) "
           "of the recipe per model", "",
           "| model | device | first epoch s | last epoch s | train img/s | train peak MB | evaluate s | eval img/s "
           "| eval peak MB | full run (est.) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, row in results["models"].items():
        if "error" in row:
            out.append(f"| {key} | {results['device']} | {row['error']} ||||||||")
            continue
        estimate = row["full_run_estimate"]
        out.append(f"| {key} | {row['device']} | {row['first_epoch_seconds']:.1f} | {row['seconds_per_epoch']:.1f} | "
                   f"{row['train_images_per_second']:.1f} "
                   f"| {row['train_peak_memory_mb']:.0f} | {row['evaluate_stage_seconds']:.1f} | "
                   f"{row['evaluate_images_per_second']:.1f} | {row['evaluate_peak_memory_mb']:.0f} | "
                   f"{estimate['hours']:.2f} h ({estimate['epochs']} epochs of {estimate['train_images']}) |")
    return "\n".join(out)
