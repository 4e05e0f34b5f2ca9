"""dvc.yaml and the code cannot disagree: dvc.yaml is what `make deps` writes (devtools/deps.py), every stage
depends on exactly the project modules it runs (derived from its imports, lazy ones included, its model's own
architecture for the stages that build one), and passes its stage script exactly the paths it declares as inputs
and outputs, which are the defaults of pipeline/core/layout.py."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import pytest
import yaml

from devtools import deps
from devtools.deps import LAYOUTS, MODELS, code_closure, component_closure, component_files, shared_by
from pipeline.core import layout

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
# Paths a stage is given that DVC does not track, each for a stated reason: SBD's tgz is a download cache that
# does not exist when prepare.train_set is train (stages/sbd.py); checkpoints are the resumable state of unfinished
# runs on this machine, which a finished run removes: as an output (even uncached) a fresh clone would miss them,
# and `dvc status` would call every trained model out of date.
UNTRACKED = {"sbd": {"data/raw/benchmark.tgz"}, **{f"train@{key}": {f"checkpoints/{key}"} for key in PARAMS["models"]}}


def is_code(path: str) -> bool:
    return path.split("/")[0] in deps.PACKAGES


def rendered_stages() -> dict[str, dict]:
    """dvc.yaml's stages with `foreach` expanded over params.yaml's models, as `dvc repro` sees them."""
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {}
    for name, stage in definition["stages"].items():
        if "foreach" not in stage:
            text = yaml.safe_dump(stage).replace("${data.path}", PARAMS["data"]["path"])
            stages[name] = yaml.safe_load(text)
            continue
        for key, entry in PARAMS["models"].items():
            text = yaml.safe_dump(stage["do"]).replace("${key}", key)
            stages[f"{name}@{key}"] = yaml.safe_load(text.replace("${item.architecture}", entry["architecture"]))
    return stages


def declared(entries: list) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries or []]


STAGES = rendered_stages()


def test_dvc_yaml_is_what_make_deps_writes():
    current = (REPO / "dvc.yaml").read_text()
    assert deps.rendered(current, PARAMS) == current, "dvc.yaml's code deps or plots are stale: run `make deps`"


def runs(name: str) -> set[str]:
    """Every project file stage `name` runs: its command's imports, its model's architecture if it builds one, and
    every layout if it reads one (a preset chooses the layout, which dvc.yaml cannot name)."""
    module = shlex.split(STAGES[name]["cmd"])[2]  # python -m <module> ...
    closure = code_closure(module)
    if MODELS.registry in closure:
        closure |= component_closure(MODELS, PARAMS["models"][name.split("@")[1]]["architecture"])
    if LAYOUTS.registry in closure:
        closure |= set().union(*(component_closure(LAYOUTS, name) for name in component_files(LAYOUTS)))
    return closure


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_hold_what_the_stage_runs_and_other_components_never(name):
    listed = {dep for dep in declared(STAGES[name]["deps"]) if is_code(dep)}
    needed = runs(name)
    assert not needed - listed, f"{name}: dvc.yaml misses deps {sorted(needed - listed)}"
    extra = listed - needed
    # Beyond what it runs, a stage may list only modules that other components of its registries share (never
    # another architecture's own file): shared code reruns all.
    others = set(component_files(MODELS).values())
    assert not extra & others, f"{name}: depends on {sorted(extra & others)}"
    shared = shared_by(MODELS) | shared_by(LAYOUTS)
    assert extra <= shared, f"{name}: dvc.yaml lists deps the stage never imports {sorted(extra - shared)}"


def test_the_data_stages_never_depend_on_the_training_or_model_schema():
    for name in ("download", "extract", "sbd", "prepare"):
        code = {dep for dep in declared(STAGES[name]["deps"]) if is_code(dep)}
        assert not {path for path in code if path.startswith(("pipeline/models/", "pipeline/training/"))}, name
        params = {path for path in code if path.startswith("pipeline/core/params/")}
        assert params == {"pipeline/core/params/__init__.py", "pipeline/core/params/schema.py",
                          "pipeline/core/params/data.py"}, name


@pytest.mark.parametrize("name", sorted(STAGES))
def test_paths_passed_are_the_declared_inputs_and_outputs_and_the_layout_defaults(name):
    stage = STAGES[name]
    argv = shlex.split(stage["cmd"])
    assert argv[:2] == ["python", "-m"], stage["cmd"]
    module = importlib.import_module(argv[2])
    given = vars(module.parse_args(argv[3:]))
    passed = {value.as_posix() for value in given.values() if isinstance(value, Path)}
    outs = declared(stage.get("outs")) + declared(stage.get("metrics")) + declared(stage.get("plots"))
    data_deps = [dep for dep in declared(stage.get("deps")) if not is_code(dep)]
    assert passed - UNTRACKED.get(name, set()) == set(outs) | set(data_deps), f"{name}: cmd passes {sorted(passed)}"

    # Run by hand with no path options, the stage reads and writes the same files as under DVC.
    selector = argv[3:5] if argv[3] == "--model" else argv[3:4] if argv[3] == "--compare" else []
    defaults = vars(module.parse_args(selector))
    if "--model" in selector:
        model_paths = vars(layout.model_paths(argv[argv.index("--model") + 1]))
        defaults = {k: model_paths.get(k, v) if v is None else v for k, v in defaults.items()}
    if "source" in defaults and defaults["source"] is None:  # prepare reads data.path when not told
        defaults["source"] = Path(PARAMS["data"]["path"])
    assert given == defaults, f"{name}: dvc.yaml's paths differ from pipeline/core/layout.py's"


def test_history_plots_draw_every_model():
    # DVC expands `foreach` in stages only: the top-level plots name each model's history file (`make deps`).
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())
    expected = {f"metrics/train/{key}.csv" for key in PARAMS["models"]}
    for plot in definition["plots"]:
        (title, spec), = plot.items()
        assert set(spec["y"]) == expected, f"dvc.yaml's plot {title!r} draws {sorted(spec['y'])}"
