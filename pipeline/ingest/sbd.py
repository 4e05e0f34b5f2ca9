"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011) as VOC 'trainaug' uses it: facts and label reading.

`benchmark.tgz` holds `benchmark_RELEASE/dataset/{img/<id>.jpg, cls/<id>.mat, train.txt, val.txt}` (8,498 and
2,857 ids). Each `cls/<id>.mat` is a MATLAB struct `GTcls` whose field `Segmentation` is the H×W class-index array
(0 background … 20, VOC's classes in VOC's order, no void border). trainaug = (VOC train ∪ SBD train ∪ SBD val) −
VOC val: 10,582 ids, labelled by VOC's PNG where VOC has one (it marks void borders), else by SBD's `.mat`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError

SBD_ROOT = "benchmark_RELEASE/dataset"
LISTS = ("train", "val")
IMAGE_DIR, IMAGE_SUFFIX = "img", ".jpg"
LABEL_DIR, LABEL_SUFFIX = "cls", ".mat"


def read_list(sbd_dir: str | os.PathLike, name: str) -> list[str]:
    path = Path(sbd_dir) / f"{name}.txt"
    try:
        return path.read_text().split()
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the sbd stage (dvc repro sbd), or set prepare.train_set: "
                            "train to train on VOC alone") from None


def image_path(sbd_dir: str | os.PathLike, image_id: str) -> Path:
    return Path(sbd_dir) / IMAGE_DIR / f"{image_id}{IMAGE_SUFFIX}"


def label_path(sbd_dir: str | os.PathLike, image_id: str) -> Path:
    return Path(sbd_dir) / LABEL_DIR / f"{image_id}{LABEL_SUFFIX}"


def missing_label(path: str | os.PathLike) -> PipelineError:
    return PipelineError(f"{path}: missing, but listed in SBD's train.txt or val.txt; run the sbd stage again")


def read_label(path: str | os.PathLike) -> np.ndarray:
    """The H×W uint8 class ids of one `cls/<id>.mat`; a file that is not such a label is one error naming it."""
    import scipy.io  # only the trainaug path needs it

    path = Path(path)
    try:
        segmentation = scipy.io.loadmat(path)["GTcls"][0]["Segmentation"][0]
    except FileNotFoundError:
        raise missing_label(path) from None
    except Exception as error:  # not a MAT file, no GTcls struct, no Segmentation field: all "not an SBD label"
        raise PipelineError(f"{path}: not an SBD label (a MATLAB file with GTcls.Segmentation): "
                            f"{type(error).__name__}: {error}; run the sbd stage again") from None
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise PipelineError(f"{path}: GTcls.Segmentation is {segmentation.dtype} of shape {segmentation.shape}, "
                            "want a 2-D array of class ids; run the sbd stage again")
    if segmentation.size and (segmentation.min() < 0 or segmentation.max() > 255):
        raise PipelineError(f"{path}: GTcls.Segmentation holds {segmentation.min()}..{segmentation.max()}, "
                            "outside 0..20; run the sbd stage again")
    return segmentation.astype(np.uint8)
