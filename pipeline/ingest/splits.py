"""Split files (one id a line) and their checks, and the seeded split of a dataset listed by `val_fraction`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError


def some(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def read_ids(path: Path, fix: str) -> list[str]:
    """The ids listed in `path`; `fix` says what to do when it is missing or empty."""
    try:
        ids = path.read_text().split()
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; {fix}") from None
    if not ids:
        raise PipelineError(f"{path}: lists no ids; {fix}")
    return ids


def check_splits(split_ids: dict[str, list[str]], files: dict[str, Path], fix: str) -> None:
    """Refuse an id listed twice in one split or in more than one split: a val image that is also trained on
    inflates every metric."""
    for split, ids in split_ids.items():
        repeated = sorted(image_id for image_id, count in Counter(ids).items() if count > 1)
        if repeated:
            raise PipelineError(f"{files[split]}: {some(repeated)} listed more than once; each id must appear once "
                                f"({fix})")
    shared = sorted(set.intersection(*(set(ids) for ids in split_ids.values())))
    if shared:
        raise PipelineError(f"{' and '.join(files[split].name for split in split_ids)} both list {some(shared)}; "
                            f"the splits must be disjoint ({fix})")


def seeded_split(ids: list[str], val_fraction: float, seed: int, where: Path) -> dict[str, list[str]]:
    """train and val ids, each in id order: val is round(val_fraction × n) ids (at least one, and one left to
    train on) drawn by `seed` from the sorted ids, so the same files and seed always give the same split."""
    ordered = sorted(ids)
    n_val = max(1, round(val_fraction * len(ordered)))
    if len(ordered) < 2 or n_val >= len(ordered):
        raise PipelineError(f"{where}: {len(ordered)} image(s) cannot be split by val_fraction {val_fraction} into a "
                            "non-empty train and val; add images or change dataset.val_fraction")
    chosen = set(np.random.default_rng(seed).permutation(len(ordered))[:n_val].tolist())
    return {"train": [image_id for i, image_id in enumerate(ordered) if i not in chosen],
            "val": [image_id for i, image_id in enumerate(ordered) if i in chosen]}
