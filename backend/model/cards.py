"""Model cards as data: ``<folder>/model_card.json`` read with its defaults, free of torch.

The QGIS plugin lists the models from these readings at start-up (no torch import); :mod:`backend.model.registry`
builds the network from the same reading. A card's defaults (bands, tile, stride, blend, nodata, resolution) are
defined here only; mean and std are the card's ``architecture`` (``backend.model.network.ModelConfig``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.errors import BadInput

CARD_FILE = "model_card.json"
CARD_DEFAULTS: dict[str, Any] = {
    "bands": ["red", "green", "blue"],
    "tile_size": 512,
    "stride": 448,  # 64 px of overlap: 0.6x the tiles of stride 341 for at most 0.3 mIoU (docs/performance.md)
    "blend": "hann",  # backend.segmentation.tiling.BLENDS
    "nodata": 255,  # the class rasters' nodata, and the labels' ignore value
    "resolution_m": None,  # ground resolution the model was trained at, metres per pixel; None: not known
}


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card's fields, the defaults filled in; a missing or unreadable card is bad input."""
    path = Path(folder) / CARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BadInput(f"{path}: not a valid model card ({error})") from error
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a valid model card (not a JSON object)")
    return {**CARD_DEFAULTS, "bands": list(CARD_DEFAULTS["bands"]), **data}
