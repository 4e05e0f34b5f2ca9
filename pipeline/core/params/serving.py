"""The `serving` section: limits of the served model (carried in it) and of `tools.predict`."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.params.schema import limits


@dataclass(frozen=True)
class ServingParams:
    # Above it a JPEG is predicted on a downscaled copy (mask scaled back), any other image refused.
    max_pixels: int = field(default=4_000_000, metadata=limits(1))
    max_rows: int = field(default=16, metadata=limits(1))  # images per request
