"""The `render` section: which val images the render and compare stages draw."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.params.schema import limits

FIRST_IDS = 4  # with `ids` empty: the first val ids, whatever the dataset


@dataclass(frozen=True)
class RenderParams:
    # val ids drawn for every model; empty: the first FIRST_IDS of val, so that any dataset renders untouched
    ids: list[str] = field(default_factory=list)
    worst_k: int = field(default=4, metadata=limits(0))  # plus each model's k worst val images by per-image IoU

    def chosen(self, val_ids: list[str]) -> list[str]:
        """The ids to draw for every model: `ids`, or the first val ids when it is empty."""
        return list(self.ids) if self.ids else list(val_ids[:FIRST_IDS])
