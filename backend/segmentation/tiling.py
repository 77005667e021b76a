"""How a scene is cut into tiles and put back together, resolved once from the model card and the user's options.

Free of torch, numpy and rasterio, so the contract, the plugin and the Dask client can all build one and a
bad tiling is said (one line, exit 2) before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from backend.errors import BadInput

# hann: every tile that covers a pixel votes, weighted by a Hann window (smooth seams, each pixel predicted
#       about (tile / stride)^2 times);
# centre: each pixel takes the one tile whose centre is nearest, so only a tile's central stride x stride
#       is kept and its (tile - stride) / 2 margins serve as context (docs/performance.md measures both).
BLENDS = ("hann", "centre")


@dataclass(frozen=True)
class Tiling:
    """Tile side, stride between tile origins and how overlapping tiles are blended; checked when built."""

    tile: int
    stride: int
    blend: str

    def __post_init__(self) -> None:
        if isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile < 1:
            raise BadInput(f"tile size {self.tile!r}: must be a whole number of at least 1 pixel")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or not 1 <= self.stride <= self.tile:
            raise BadInput(f"stride {self.stride!r}: must lie in 1..{self.tile} (the tile size), or tiles leave gaps")
        if self.blend not in BLENDS:
            raise BadInput(f"blend {self.blend!r}: expected one of {', '.join(BLENDS)}")

    def adjusted(self, tile: int | None = None, stride: int | None = None, blend: str | None = None) -> Tiling:
        """This (the model card's) tiling with the user's choices over it. A tile other than the card's without
        a stride keeps the card's stride-to-tile ratio, so the overlap stays the same share of a tile."""
        tile = tile or self.tile
        if stride is None:
            stride = self.stride if tile == self.tile else max(1, round(tile * self.stride / self.tile))
        return Tiling(tile, stride, blend or self.blend)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
