"""The layout draws the data flow: each group of `pipeline/` imports only the groups below it in `ALLOWED`, the
installed package never imports the repository's scripts, and each stage runs only the groups that can change its
DVC outputs (so that, e.g., an overlay's colour never retrains a model)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from test_dvc_contract import STAGES

from devtools.deps import code_closure, imported_modules

REPO = Path(__file__).resolve().parents[1]

# group → the groups it may import, in the order the data flows. `core` is params, paths, the runtime policy,
# errors, atomic writes, stage plumbing and label maps; everything may use it.
ALLOWED = {
    "core": set(),
    "prepared": {"core"},
    "models": {"core"},
    "ingest": {"core", "prepared"},
    "evaluation": {"core", "prepared"},
    "tracking": {"core"},
    "training": {"core", "prepared", "models", "evaluation", "tracking"},
    "reporting": {"core", "prepared", "evaluation"},
    "export": {"core", "prepared", "models"},
    "serving": {"core", "prepared", "models", "evaluation", "reporting"},
}

# What each kind of stage must never run: the groups (or single modules) whose edits cannot change its outputs.
NEVER = {
    "train": ["pipeline/ingest/", "pipeline/reporting/", "pipeline/serving/"],
    "evaluate": ["pipeline/ingest/", "pipeline/reporting/", "pipeline/training/", "pipeline/serving/images.py",
                 "pipeline/serving/service.py"],
    "render": ["pipeline/ingest/", "pipeline/training/", "pipeline/models/", "pipeline/serving/"],
    "compare": ["pipeline/ingest/", "pipeline/training/", "pipeline/models/", "pipeline/serving/"],
    "export": ["pipeline/ingest/", "pipeline/training/", "pipeline/evaluation/", "pipeline/reporting/",
               "pipeline/tracking/", "pipeline/serving/"],
    # archive.py is prepare's: a layout is one module, holding how its archive unpacks beside how its pairs are read
    "prepare": ["pipeline/ingest/download.py", "pipeline/models/", "pipeline/training/"],
}


def group_of(path: Path) -> str:
    return path.relative_to(REPO / "pipeline").parts[0]


def pipeline_files() -> list[Path]:
    return sorted(path for path in (REPO / "pipeline").rglob("*.py") if path.parent != REPO / "pipeline")


def test_every_module_is_in_a_group():
    assert {group_of(path) for path in pipeline_files()} == set(ALLOWED)
    assert [path.name for path in (REPO / "pipeline").glob("*.py")] == ["__init__.py"]


@pytest.mark.parametrize("path", pipeline_files(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_a_group_imports_only_the_groups_below_it(path):
    group = group_of(path)
    for name in imported_modules(path):
        parts = name.split(".")
        assert parts[0] == "pipeline", f"{path.name} imports {name}: the package never imports stages or tools"
        if len(parts) > 1 and parts[1] != group:
            assert parts[1] in ALLOWED[group], f"pipeline/{group} may not import {name} (allowed: {ALLOWED[group]})"


def test_the_package_never_imports_the_repositorys_scripts():
    for path in (REPO / "pipeline").rglob("*.py"):
        text = path.read_text()
        for script in ("devtools", "stages", "tools"):
            assert f"from {script}" not in text and f"import {script}" not in text, f"{path} imports {script}"


@pytest.mark.parametrize("name", sorted(name for name in STAGES if name.split("@")[0] in NEVER))
def test_a_stage_runs_only_what_can_change_its_outputs(name):
    closure = code_closure(shlex.split(STAGES[name]["cmd"])[2])
    for forbidden in NEVER[name.split("@")[0]]:
        assert not [path for path in closure if path.startswith(forbidden)], f"{name} runs {forbidden}"
