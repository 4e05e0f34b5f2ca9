"""Shared fixtures: one small generated VOC archive per test session, and its extracted tree."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml

from devtools.synthetic import write_sbd_tgz, write_voc_tar
from pipeline.ingest.archive import extract_sbd

# Small enough to build in about a second, large enough (≥ 7 images a split) that every class is in both splits.
SYNTHETIC = {"seed": 0, "n_train": 24, "n_val": 16, "min_size": 40, "max_size": 120}


@pytest.fixture(scope="session")
def voc_tar(tmp_path_factory) -> Path:
    """A generated tar in the real VOCtrainval_11-May-2012.tar layout (arguments: `SYNTHETIC`)."""
    path = tmp_path_factory.mktemp("voc_tar") / "VOCtrainval-synthetic.tar"
    write_voc_tar(path, **SYNTHETIC)
    return path


@pytest.fixture(scope="session")
def voc_tree(voc_tar, tmp_path_factory) -> Path:
    """`voc_tar` extracted in full: the directory that contains VOCdevkit/VOC2012. Treat it as read-only; copy it
    to break files."""
    root = tmp_path_factory.mktemp("voc_tree")
    with tarfile.open(voc_tar) as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(scope="session")
def voc_prepared(voc_tree, tmp_path_factory) -> Path:
    """`voc_tree` as the prepare stage packs it (VOC train, val). Treat it as read-only."""
    from pipeline.ingest.prepare import prepare

    out = tmp_path_factory.mktemp("voc_prepared") / "prepared"
    prepare(voc_tree, out, workers=1, progress=False)
    return out


# SBD shares 3 VOC train ids with each of its lists and lists 3 VOC val ids in its train, plus ids of its own.
SYNTHETIC_SBD = {"seed": 1, "n_train": 10, "n_val": 5, "overlap": 3, "min_size": 40, "max_size": 120}


@pytest.fixture(scope="session")
def sbd_tgz(voc_tar, tmp_path_factory) -> Path:
    """A generated `benchmark.tgz` in SBD's real layout that goes with `voc_tar` (arguments: `SYNTHETIC_SBD`)."""
    path = tmp_path_factory.mktemp("sbd_tgz") / "benchmark-synthetic.tgz"
    write_sbd_tgz(path, voc_tar, **SYNTHETIC_SBD)
    return path


@pytest.fixture(scope="session")
def sbd_dir(sbd_tgz, tmp_path_factory) -> Path:
    """`sbd_tgz` as the sbd stage extracts it: img/, cls/, train.txt, val.txt. Treat it as read-only."""
    out = tmp_path_factory.mktemp("sbd") / "SBD"
    extract_sbd(sbd_tgz, out, progress=False)
    return out


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width`×`height` RGB pixels and that holds none: what a decompression bomb
    looks like to a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def offline_params(voc_tar: Path, sbd_tgz: Path) -> dict:
    """The committed params.yaml with its archives at the generated ones (file:// URLs, md5s, sizes) and one prepare
    worker: what a test project runs the real DVC stages with."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for section, archive in (("data", voc_tar), ("sbd", sbd_tgz)):
        raw[section].update(urls=[archive.as_uri()], md5=hashlib.md5(archive.read_bytes()).hexdigest(),
                            size=archive.stat().st_size)
    raw["prepare"]["workers"] = 1
    return raw


def dvc_project(root: Path, params: dict) -> Path:
    """A copy of the pipeline's definition and code in a fresh git + DVC repository at `root`, with `params` as its
    params.yaml: where a test runs the real `dvc repro`."""
    repo = Path(__file__).resolve().parents[1]
    for name in ("pipeline", "stages"):
        shutil.copytree(repo / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    return root


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`dvc *args` in `project` with this venv's tools first on PATH (stage commands say `python`), and `env` added
    to the environment; its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", **(env or {})}
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr
