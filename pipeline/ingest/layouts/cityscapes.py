"""The `cityscapes` layout (`dataset.preset: cityscapes`): `leftImg8bit/{train,val}/<city>/<id>_leftImg8bit.png`
paired by id with `gtFine/{train,val}/<city>/<id>_gtFine_labelIds.png`, whose label ids the preset's label map
turns into the 19 train ids (every other id ignored). No archive: Cityscapes is downloaded behind a login, so
`data.path` names the directory holding both folders."""

from __future__ import annotations

from pipeline.core.errors import PipelineError
from pipeline.core.params.data import DatasetParams
from pipeline.ingest.layouts import Layout, Pair, Sources, register_layout
from pipeline.ingest.pairing import benchmark_root, check_no_split_keys, folder_pairs

IMAGES, MASKS = "leftImg8bit", "gtFine"
SUFFIXES = ("_leftImg8bit.png", "_gtFine_labelIds.png")


def check(dataset: DatasetParams) -> None:
    check_no_split_keys(dataset, "Cityscapes' splits are its train/ and val/ folders")


def pairs(dataset: DatasetParams, sources: Sources) -> dict[str, list[Pair]]:
    root = benchmark_root(sources.root, "cityscapes", (IMAGES, MASKS), "cityscapes")
    return folder_pairs(root, dataset, IMAGES, MASKS, {"train": "train", "val": "val"}, SUFFIXES)


def extract(archive, out, dataset, progress) -> dict:
    raise PipelineError("the cityscapes preset reads a directory: set data.path to the one holding leftImg8bit/ "
                        "and gtFine/ (Cityscapes' archives need a login, so no stage downloads them)")


register_layout(Layout("cityscapes", check, pairs, extract, fix="fix or remove the file",
                       origins=lambda dataset, train_set: (dataset.name,)))
