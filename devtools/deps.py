"""`make deps`: the code deps of dvc.yaml, derived from the stages' imports, and its per-model plot lines, from
params.yaml's models. Nobody writes either by hand; tests/test_dvc_contract.py fails when dvc.yaml is not what
this writes.

A stage depends on exactly the project modules its command imports, lazy imports included. Two registries import
their components by name, on demand: the stages that build a network (train, export, evaluate) import the model
registry, which imports the model's architecture; extract and prepare import the dataset layouts' registry, which
imports the dataset's layout. A model's stage depends on the one architecture DVC names for it
(`pipeline/models/architectures/${item.architecture}.py`) plus the modules any architecture imports beside its own
(shared layers, backbone weights), so an edit of one network's file makes only its own stages stale. extract and
prepare depend on every layout: a `dataset` section may be `{preset: cityscapes}` alone, which names no layout for
dvc.yaml to interpolate.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


@dataclass(frozen=True)
class Registry:
    """Components imported by name from `package` when `registry` (a module) is imported; `per_stage` is the dep
    DVC fills in with a stage's own component, or None where a stage depends on every component (and what they
    import)."""

    registry: str
    package: str
    per_stage: str | None


MODELS = Registry("pipeline/models/registry.py", "pipeline/models/architectures",
                  "pipeline/models/architectures/${item.architecture}.py")  # per model, in a foreach stage
# Every layout: a `dataset` section may hold only `preset`, so dvc.yaml cannot interpolate `${dataset.layout}`
# (DVC refuses a missing key); a layout's edit re-prepares, and identical prepared data reruns nothing after.
LAYOUTS = Registry("pipeline/ingest/layouts/__init__.py", "pipeline/ingest/layouts", None)
REGISTRIES = (MODELS, LAYOUTS)


def module_file(name: str, repo: Path = REPO) -> Path | None:
    """The source file of project module `name` (a package's __init__.py), or None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = repo.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path, repo: Path = REPO) -> set[str]:
    """Project modules that `path` imports anywhere in its body (a package's parents count: importing
    `pipeline.models.layers` runs `pipeline/__init__.py` and `pipeline/models/__init__.py`)."""
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
    return {name for name in names if module_file(name, repo) is not None}


def code_closure(module: str, repo: Path = REPO) -> set[str]:
    """Repository-relative paths of `module`'s file and of every project file it imports, transitively."""
    seen: set[str] = set()
    todo = [module, *(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name, repo), repo)
    return {module_file(name, repo).relative_to(repo).as_posix() for name in seen}


def component_files(registry: Registry, repo: Path = REPO) -> dict[str, str]:
    """Component name → its module's path."""
    return {path.stem: path.relative_to(repo).as_posix()
            for path in sorted((repo / registry.package).glob("*.py")) if path.name != "__init__.py"}


def component_closure(registry: Registry, name: str, repo: Path = REPO) -> set[str]:
    return code_closure(f"{registry.package.replace('/', '.')}.{name}", repo)


def architecture_files(repo: Path = REPO) -> dict[str, str]:
    return component_files(MODELS, repo)


def architecture_closure(name: str, repo: Path = REPO) -> set[str]:
    return component_closure(MODELS, name, repo)


def shared_by(registry: Registry, repo: Path = REPO) -> set[str]:
    """What the registry's components import beside themselves."""
    files = component_files(registry, repo)
    return set().union(*(component_closure(registry, name, repo) for name in files)) - set(files.values())


def stage_code(module: str, repo: Path = REPO) -> list[str]:
    """The code deps of a stage running `python -m <module>`, as dvc.yaml lists them."""
    deps = code_closure(module, repo)
    for registry in REGISTRIES:
        if registry.registry in deps:
            deps |= shared_by(registry, repo)
            deps |= {registry.per_stage} if registry.per_stage else set(component_files(registry, repo).values())
    return sorted(deps)


def rendered(dvc_yaml: str, params: dict, repo: Path = REPO) -> str:
    """`dvc_yaml` with every stage's code deps and the history plots' model lines as they must be."""
    definition = yaml.safe_load(dvc_yaml)
    lines = dvc_yaml.splitlines(keepends=True)
    for name, stage in definition["stages"].items():
        body = stage.get("do", stage)
        module = body["cmd"].split()[2]  # python -m <module> ...
        lines = _replace_code_deps(lines, name, stage_code(module, repo))
    return _replace_plot_lines("".join(lines), list(params["models"]))


def _is_code(item: str) -> bool:
    return item.split("/")[0] in PACKAGES


def _replace_code_deps(lines: list[str], stage: str, code: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == f"  {stage}:")
    deps = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "deps:")
    indent = len(lines[deps]) - len(lines[deps].lstrip()) + 2
    end = deps + 1
    for i in range(deps + 1, len(lines)):  # the list runs to its last item; comments after it stay where they are
        if lines[i].startswith(" " * indent + "- "):
            end = i + 1
        elif not lines[i].strip().startswith("#"):
            break
    kept = [line for line in lines[deps + 1:end] if not _is_code(line.strip().removeprefix("- ").split()[0])]
    written = [f"{' ' * indent}- {path}\n" for path in code]
    return lines[:deps + 1] + kept + written + lines[end:]


_PLOT_LINE = re.compile(r"^(?P<indent>\s+)metrics/train/[^:]+\.csv: (?P<column>\S+)\n?$")


def _replace_plot_lines(text: str, models: list[str]) -> str:
    """Each run of `metrics/train/<model>.csv: <column>` lines (DVC expands `foreach` in stages only, so the
    top-level plots name every model's history file) becomes one line per model of params.yaml."""
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        match = _PLOT_LINE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        while i < len(lines) and _PLOT_LINE.match(lines[i]):
            i += 1
        out += [f"{match['indent']}metrics/train/{key}.csv: {match['column']}\n" for key in models]
    return "".join(out)


def write(repo: Path = REPO) -> bool:
    """Rewrite dvc.yaml in place; True when it changed."""
    from pipeline.core.atomic import write_text

    path = repo / "dvc.yaml"
    current = path.read_text()
    new = rendered(current, yaml.safe_load((repo / "params.yaml").read_text()), repo)
    if new != current:
        write_text(path, new)
    return new != current
