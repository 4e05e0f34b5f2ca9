"""dvc.yaml and the code cannot disagree: every stage depends on exactly the project modules it runs (derived from
its imports, lazy ones included), and passes its stage script exactly the paths it declares as inputs and outputs,
which are the defaults of pipeline/core/layout.py."""

from __future__ import annotations

import ast
import importlib
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.core import layout

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
# Paths a stage is given that DVC does not track, each for a stated reason: SBD's tgz is a download cache that
# does not exist when prepare.train_set is train (stages/sbd.py); checkpoints are the resumable state of an
# unfinished run on this machine, which a finished run removes: as an output (even uncached) a fresh clone would
# miss it, and `dvc status` would call every trained model out of date.
UNTRACKED = {"sbd": {"data/raw/benchmark.tgz"},
             **{f"train@{key}": {f"checkpoints/{key}"}
                for key in yaml.safe_load((REPO / "params.yaml").read_text())["models"]}}


def module_file(name: str) -> Path | None:
    """The source file of project module `name` (a package's __init__.py), or None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = REPO.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    """Project modules that `path` imports anywhere in its body (a package's parents count: importing
    `pipeline.models.fcn` runs `pipeline/__init__.py` and `pipeline/models/__init__.py`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in found:
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in names if module_file(name) is not None}


def code_closure(module: str) -> set[str]:
    """Repository-relative paths of `module`'s file and of every project file it imports, transitively."""
    seen: set[str] = set()
    todo = [module, *(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name))
    return {module_file(name).relative_to(REPO).as_posix() for name in seen}


def is_code(path: str) -> bool:
    return path.split("/")[0] in PACKAGES


def expand_code_dep(path: str) -> set[str]:
    target = REPO / path
    if target.is_dir():
        return {p.relative_to(REPO).as_posix() for p in target.rglob("*.py") if "__pycache__" not in p.parts}
    return {path}


def rendered_stages() -> dict[str, dict]:
    """dvc.yaml's stages with `foreach` expanded over params.yaml's models, as `dvc repro` sees them."""
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    models = params["models"]
    stages = {}
    for name, stage in definition["stages"].items():
        if "foreach" not in stage:
            stages[name] = yaml.safe_load(yaml.safe_dump(stage).replace("${data.path}", params["data"]["path"]))
            continue
        for key in models:
            text = yaml.safe_dump(stage["do"]).replace("${key}", key)
            stages[f"{name}@{key}"] = yaml.safe_load(text)
    return stages


def declared(entries: list) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries or []]


STAGES = rendered_stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_what_the_stage_imports(name):
    stage = STAGES[name]
    module = shlex.split(stage["cmd"])[2]  # python -m <module> ...
    listed = set().union(*(expand_code_dep(dep) for dep in declared(stage["deps"]) if is_code(dep)))
    needed = code_closure(module)
    assert not needed - listed, f"{name}: dvc.yaml misses deps {sorted(needed - listed)}"
    assert not listed - needed, f"{name}: dvc.yaml lists deps the stage never imports {sorted(listed - needed)}"


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
        defaults["source"] = Path(yaml.safe_load((REPO / "params.yaml").read_text())["data"]["path"])
    assert given == defaults, f"{name}: dvc.yaml's paths differ from pipeline/core/layout.py's"


def test_history_plots_draw_every_model():
    # DVC expands `foreach` in stages only: the top-level plots name each model's history file by hand.
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    expected = {f"metrics/train/{key}.csv" for key in models}
    for plot in definition["plots"]:
        (title, spec), = plot.items()
        assert set(spec["y"]) == expected, f"dvc.yaml's plot {title!r} draws {sorted(spec['y'])}"
