"""The `ade20k` layout (`dataset.preset: ade20k`): SceneParsing's ADEChallengeData2016, `images/{training,
validation}/<id>.jpg` paired by id with `annotations/{training,validation}/<id>.png` (single channel: 0 "other",
1..150 the classes, which the preset's `reduce_zero_label` shifts down). `data.path` names the directory (or the
one holding ADEChallengeData2016/), or `data.urls` its zip, unpacked whole."""

from __future__ import annotations

from pipeline.core.params.data import DatasetParams
from pipeline.ingest.archive import extract_folders
from pipeline.ingest.layouts import Layout, Pair, Sources, register_layout
from pipeline.ingest.pairing import benchmark_root, check_no_split_keys, folder_pairs

IMAGES, MASKS = "images", "annotations"


def check(dataset: DatasetParams) -> None:
    check_no_split_keys(dataset, "ADE20K's splits are its training/ and validation/ folders")


def pairs(dataset: DatasetParams, sources: Sources) -> dict[str, list[Pair]]:
    root = benchmark_root(sources.root, "ADEChallengeData2016", (IMAGES, MASKS), "ade20k")
    return folder_pairs(root, dataset, IMAGES, MASKS, {"train": "training", "val": "validation"}, (".jpg", ".png"))


register_layout(Layout(
    "ade20k", check, pairs,
    extract=lambda archive, out, dataset, progress: extract_folders(archive, out, images=IMAGES, masks=MASKS,
                                                                    progress=progress),
    fix="fix or remove the file", origins=lambda dataset, train_set: (dataset.name,)))
