"""`make sweep`: a grid of params as queued DVC experiments, on the demo's data and settings.

One `dvc exp run --queue` with a Hydra sweep (`-S key=a,b,c`) queues an experiment per point of the grid, on top of
the demo's overrides (params.demo.yaml and the generated archives, applied as `make demo` applies them);
`dvc queue start` runs them one at a time, each in a temporary copy of the repository under .dvc/tmp/exps/. DVC
tells each run its experiment name, its baseline commit and the checkout it came from (DVC_EXP_NAME,
DVC_EXP_BASELINE_REV, DVC_ROOT), so each experiment is one MLflow run in this checkout's store, tagged
`dvc_experiment` and `dvc_baseline_rev` (pipeline/tracking/runs.py): `make ui` and `dvc exp show` list the same sweep.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from devtools.demo import demo_overrides, hydra_value, merge_overrides, set_param_flags
from pipeline.core.cli import venv_tool
from pipeline.core.errors import PipelineError
from pipeline.core.params.whole import parse
from pipeline.ingest.download import md5_of

log = logging.getLogger(__name__)

# Three learning rates of the demo's FCN around the demo's own (Adam, 2e-3).
DEFAULT_GRID: dict[str, list] = {"models.fcn.train.lr": [0.001, 0.002, 0.004]}

REMOVED_AFTER_S = 30.0
_QUEUED = re.compile(r"Queued experiment '([^']+)'")
_STATES = {"Queued", "Running", "Success", "Failed", "Unknown"}


def _env() -> dict[str, str]:
    """Stage commands say `python`: make it this interpreter (the venv's), also in the queue's workers, which
    inherit the environment of `dvc queue start`."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def _dvc(cwd: Path, *args: str) -> str:
    """`dvc *args` in `cwd`, its output returned. Read from a file, not a pipe: `dvc queue start` leaves a daemon
    holding the descriptors it was given, and a pipe would not reach end-of-file until the queue's worker exits."""
    with tempfile.TemporaryFile("w+") as output:
        code = subprocess.run([venv_tool("dvc"), *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                              stdout=output, stderr=subprocess.STDOUT).returncode
        output.seek(0)
        text = output.read()
    if code != 0:
        detail = text.strip().splitlines()
        raise PipelineError(f"`dvc {' '.join(args)}` exited {code}" + (f": {detail[-1]}" if detail else ""))
    return text


def sweep_flags(grid: dict[str, list]) -> list[str]:
    """{key: [values]} → `-S ++key=v1,v2,…`: DVC queues one experiment per combination of the values (a Hydra
    choice sweep; `++` sets keys params.yaml lacks, such as a model's own `train.lr`)."""
    flags = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise PipelineError(f"sweep: {key}: give a non-empty list of values, got {values!r}")
        flags += ["-S", f"++{key}=" + ",".join(hydra_value(value) for value in values)]
    return flags


def grid_points(grid: dict[str, list]) -> Iterator[dict]:
    """Each combination of the grid as nested overrides, e.g. {"models": {"fcn": {"train": {"lr": 0.001}}}}."""
    for values in itertools.product(*grid.values()):
        point: dict = {}
        for key, value in zip(grid, values):
            *parents, leaf = key.split(".")
            node = point
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        yield point


def targets_for(grid: dict[str, list]) -> list[str]:
    """What a sweep has to rerun: only `render@<m>` (train, evaluate and render of `m`) when every swept key is one
    model's, so the other models are not trained again (in a tempdir, a lock file missing from the baseline commit
    would otherwise retrain them all); everything otherwise."""
    models = {key.split(".")[1] for key in grid if key.startswith("models.") and key.count(".") >= 2}
    if len(models) != 1 or not all(key.startswith("models.") for key in grid):
        return []
    return [f"render@{models.pop()}"]


def _without(overrides: dict, keys) -> dict:
    """`overrides` less the dotted `keys`: a swept key is set once, by the sweep."""
    pruned = {}
    for name, value in overrides.items():
        if name in keys:
            continue
        inner = [key.split(".", 1)[1] for key in keys if key.startswith(f"{name}.")]
        if isinstance(value, dict) and inner:
            value = _without(value, inner)
            if not value:
                continue  # nothing left to set (an empty dict would be set as a value)
        pruned[name] = value
    return pruned


def queue(grid: dict[str, list], *, overrides: dict | None = None, targets: list[str] | None = None,
          cwd: Path = Path(".")) -> list[str]:
    """Queue one experiment per point of `grid` (with `overrides` applied to each); returns their names."""
    flags = set_param_flags(_without(overrides or {}, grid)) + sweep_flags(grid)
    out = _dvc(cwd, "exp", "run", "--queue", *(targets or []), *flags)
    print(out, end="", flush=True)  # before the logs that `dvc queue logs` writes straight to the terminal
    names = _QUEUED.findall(out)
    if not names:
        raise PipelineError(f"dvc exp run --queue queued nothing: {out.strip() or 'no output'}")
    return names


def queue_states(cwd: Path = Path(".")) -> dict[str, str]:
    """Experiment name → Queued, Running, Success or Failed, as `dvc queue status` prints them (Task, Name, Created,
    Status: the name is the second column, the status the last)."""
    states = {}
    for line in _dvc(cwd, "queue", "status").splitlines():
        words = line.split()
        if len(words) >= 4 and words[-1] in _STATES:
            states[words[1]] = words[-1]
    return states


def run_queued(names: list[str], *, cwd: Path = Path("."), jobs: int = 1, follow: bool = True,
               poll_s: float = 3.0, timeout_s: float | None = None) -> dict[str, str]:
    """`dvc queue start`, then wait until every experiment in `names` has finished (following each one's log while
    it runs, with `follow`); returns each one's final state. Interrupted, the queue goes on in the background."""
    _dvc(cwd, "queue", "start", "--jobs", str(jobs))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    followed: set[str] = set()
    last_seen = {name: time.monotonic() for name in names}
    while True:
        states = queue_states(cwd)
        now = time.monotonic()
        last_seen.update({name: now for name in names if name in states})
        # An experiment can be missing from `dvc queue status` for a moment while a worker picks it up (seen in CI):
        # only one missing for REMOVED_AFTER_S was removed from the queue (`dvc queue remove`) and will never finish.
        final = {name: states.get(name, "Removed" if now - last_seen[name] > REMOVED_AFTER_S else "Running")
                 for name in names}
        if all(state not in ("Queued", "Running") for state in final.values()):
            return final
        running = [name for name, state in final.items() if state == "Running" and name not in followed]
        if follow and running:
            followed.add(running[0])
            left = None if deadline is None else max(1.0, deadline - time.monotonic())
            try:  # streams the experiment's output until its process ends
                subprocess.run([venv_tool("dvc"), "queue", "logs", "--follow", running[0]], cwd=cwd, env=_env(),
                               timeout=left)
            except subprocess.TimeoutExpired:
                pass
            continue
        if deadline is not None and time.monotonic() > deadline:
            raise PipelineError(f"sweep: not finished after {timeout_s:.0f} s: "
                                + ", ".join(f"{name} {state}" for name, state in final.items()))
        time.sleep(poll_s)


def untracked_deps(cwd: Path = Path(".")) -> list[str]:
    """Stage dependencies git does not know: a queued experiment runs in a copy of what git tracks (staged files
    included), so a new module that is neither committed nor staged is missing there and its stages fail."""
    stages = (yaml.safe_load((cwd / "dvc.yaml").read_text()) or {}).get("stages", {})
    deps = {dep for stage in stages.values() for dep in stage.get("do", stage).get("deps") or []}
    listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=cwd, capture_output=True,
                            text=True)
    if listed.returncode != 0:
        raise PipelineError(f"{cwd.resolve()}: not a git repository; DVC experiments need one "
                            f"({listed.stderr.strip()})")
    return sorted(deps & set(listed.stdout.splitlines()))


def show_command(grid: dict[str, list], targets: list[str]) -> list[str]:
    """`dvc exp show` down to the swept params and the mIoU of the models the sweep reran."""
    models = [target.split("@")[1] for target in targets]
    metrics = [re.escape(f"metrics/{model}.json:miou") for model in models] or [r"metrics/[^/]+\.json:miou"]
    keep = "|".join(["Experiment", *map(re.escape, grid), *metrics])
    order = ["--sort-by", f"metrics/{models[0]}.json:miou", "--sort-order", "desc"] if models else []
    return ["dvc", "exp", "show", "--md", "--drop", ".*", "--keep", keep, *order]


def run(*, grid: dict[str, list], tar: Path, sbd_tgz: Path, demo_file: Path = Path("params.demo.yaml"),
        params_file: Path = Path("params.yaml"), jobs: int = 1) -> dict[str, str]:
    """The sweep on `make demo`'s archives and settings; fails when an experiment failed."""
    missing = [str(path) for path in (tar, sbd_tgz) if not path.is_file()]
    if missing:
        raise PipelineError(f"{', '.join(missing)}: not found; run `make demo` first (the sweep uses its data)")
    overrides = demo_overrides(demo_file, tar, md5_of(tar), sbd_tgz, md5_of(sbd_tgz))
    base: dict[str, Any] = merge_overrides(yaml.safe_load(params_file.read_text()), overrides)
    for point in grid_points(grid):  # a typo or a bad value stops here, before anything is queued
        parse(merge_overrides(base, point), source=f"{params_file} + {demo_file} + sweep {point}")
    untracked = untracked_deps()
    if untracked:
        raise PipelineError(f"{', '.join(untracked)}: not known to git, and a queued experiment runs in a copy of "
                            "what git tracks; `git add` them first")
    baseline = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    targets = targets_for(grid)
    log.info("queueing %s (targets: %s)", grid, " ".join(targets) or "all stages")
    names = queue(grid, overrides=overrides, targets=targets)
    try:
        states = run_queued(names, jobs=jobs)
    except KeyboardInterrupt:
        print("\nThe queued experiments go on in the background: `dvc queue status`; "
              "`dvc queue kill <name>` or `dvc queue stop --kill` stops them.", file=sys.stderr)
        raise
    print("\nsweep finished: " + ", ".join(f"{name} {state}" for name, state in states.items()))
    show = show_command(grid, targets)
    print(f"\n$ {shlex.join(show)}\n{_dvc(Path('.'), *show[1:])}")
    print("Compare them further:\n"
          "  dvc exp show              every param and metric of every experiment\n"
          f"  make ui                   MLflow: search tags.dvc_baseline_rev = '{baseline}', tick the runs, "
          "Compare\n"
          "  dvc exp apply <name>      the chosen experiment's params and results into the workspace, to commit")
    failed = [name for name, state in states.items() if state != "Success"]
    if failed:
        raise PipelineError(f"sweep: experiments did not succeed: {', '.join(failed)} "
                            "(`dvc queue logs <name>` shows why)")
    return states
