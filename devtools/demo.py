"""`make demo`: the real DVC pipeline, offline, on generated VOC- and SBD-format archives.

The generated VOC tar and SBD tgz go through the same `download` and `sbd` stages as the real ones (file:// URLs
and their md5s), the demo trains on their trainaug, and every other stage runs unchanged. The demo's params
(params.demo.yaml) are applied as `dvc exp run -S` overrides, so the run is recorded as a DVC experiment
(`dvc exp show`), and params.yaml is restored byte for byte afterwards, whatever happens.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from devtools.synthetic import write_sbd_tgz, write_voc_tar
from pipeline.core.cli import venv_tool
from pipeline.core.errors import PipelineError
from pipeline.core.params.whole import parse

log = logging.getLogger(__name__)

MIN_MIOU = 0.5


def hydra_value(value: Any) -> str:
    """A value in the override grammar `dvc exp run -S` uses (Hydra's): strings quoted, lists bracketed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_param_flags(overrides: dict, prefix: str = "") -> list[str]:
    """Nested overrides → `-S key.path=value` flags, one per leaf (`++` adds keys params.yaml lacks)."""
    flags: list[str] = []
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flags += set_param_flags(value, f"{path}.")
        else:
            flags += ["-S", f"++{path}={hydra_value(value)}"]
    return flags


def merge_overrides(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge_overrides(base.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def demo_overrides(demo_file: Path, tar: Path, md5: str, sbd_tgz: Path, sbd_md5: str) -> dict:
    overrides = yaml.safe_load(demo_file.read_text()) or {}
    overrides["data"] = {"urls": [tar.resolve().as_uri()], "md5": md5, "size": tar.stat().st_size}
    overrides["sbd"] = {"urls": [sbd_tgz.resolve().as_uri()], "md5": sbd_md5, "size": sbd_tgz.stat().st_size}
    return overrides


def run(*, tar: Path, images: tuple[int, int], sizes: tuple[int, int], sbd_tgz: Path, sbd_images: tuple[int, int],
        sbd_overlap: int, demo_file: Path = Path("params.demo.yaml"), params_file: Path = Path("params.yaml"),
        min_miou: float = MIN_MIOU) -> dict[str, float]:
    md5 = write_voc_tar(tar, seed=0, n_train=images[0], n_val=images[1], min_size=sizes[0], max_size=sizes[1])
    sbd_md5 = write_sbd_tgz(sbd_tgz, tar, seed=1, n_train=sbd_images[0], n_val=sbd_images[1], overlap=sbd_overlap,
                            min_size=sizes[0], max_size=sizes[1])
    overrides = demo_overrides(demo_file, tar, md5, sbd_tgz, sbd_md5)
    original = params_file.read_bytes()
    demo_params = parse(merge_overrides(yaml.safe_load(original), overrides), source=f"{params_file} + {demo_file}")

    # Stage commands say `python`: make it this interpreter (the venv's) even when the venv is not activated.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    command = [venv_tool("dvc"), "exp", "run", *set_param_flags(overrides)]
    log.info("running: %s", " ".join(command))
    try:
        subprocess.run(command, check=True, env=env)
    except subprocess.CalledProcessError as error:
        raise PipelineError(f"the demo pipeline failed (dvc exp run exited {error.returncode}); "
                            "see the stage output above") from None
    finally:
        params_file.write_bytes(original)

    scores = {name: json.loads(Path(f"metrics/{name}.json").read_text())["miou"] for name in demo_params.models}
    print("\nval mIoU on the generated data:")
    width = max(map(len, scores), default=0) + 1
    for name, miou in scores.items():
        print(f"  {name:{width}s} {miou:.3f}{'' if miou >= min_miou else f'   BELOW {min_miou}'}")
    failed = [name for name, miou in scores.items() if not miou >= min_miou]
    if failed:
        raise PipelineError(f"demo models below val mIoU {min_miou}: {', '.join(failed)} (see metrics/<model>.json)")
    return scores
