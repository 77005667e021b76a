"""The Dubai aerial data set (6 districts x 9 JPEG images with RGB colour masks) as sample dicts.

The tiles are districts imaged at different resolutions and seasons, so samples are kept per tile:
training on some tiles and evaluating on the others measures a real domain shift.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.adaptation.augment import Sample
from backend.analysis.metrics import IGNORE_INDEX
from backend.errors import BadInput

DATA_ENV = "CROSSEARTH_DUBAI_DATA"
TILES = (1, 2, 3, 4, 5, 6)
CLASSES = [
    {"value": 0, "name": "Building", "color": "#3C1098"},
    {"value": 1, "name": "Land", "color": "#8429F6"},
    {"value": 2, "name": "Road", "color": "#6EC1E4"},
    {"value": 3, "name": "Vegetation", "color": "#FEDD3A"},
    {"value": 4, "name": "Water", "color": "#E2A929"},
]
# Unlabeled (#9B9B9B), black and any other colour become IGNORE_INDEX.

# The colours a model trained on these classes shows them in (its model card's): read at a glance, unlike the
# masks' colours above (Water orange, Vegetation yellow, Building and Land two purples), which only decode masks.
PALETTE = {
    "Building": "#E31A1C",  # red
    "Land": "#D2B48C",  # tan, bare land
    "Road": "#8C8C8C",  # grey
    "Vegetation": "#33A02C",  # green
    "Water": "#1F78B4",  # blue
}
CARD_CLASSES = [{**c, "color": PALETTE[c["name"]]} for c in CLASSES]


def data_dir() -> Path:
    """``$CROSSEARTH_DUBAI_DATA``, else ``<repo>/../shared/data/dubai-aerial``; raises if it is missing."""
    override = os.environ.get(DATA_ENV)
    folder = Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai-aerial"
    if not (folder / "tile_1" / "images").is_dir():
        raise BadInput(
            f"{folder}: Dubai aerial data not found (expected tile_1 ... tile_6 with images/ and masks/; "
            f"set {DATA_ENV} to its folder)"
        )
    return folder


def _color_code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_CODE_TO_CLASS = {int(c["color"][1:], 16): c["value"] for c in CLASSES}


def mask_to_classes(rgb: np.ndarray) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 colour mask -> ``[H, W]`` int64 class indices, IGNORE_INDEX for other colours."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"colour mask must be [H, W, 3], got {rgb.shape}")
    codes = _color_code(rgb)
    labels = np.full(codes.shape, IGNORE_INDEX, dtype=np.int64)
    for code, value in _CODE_TO_CLASS.items():
        labels[codes == code] = value
    return labels


def read_pair(image_path: Path, mask_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Image as float32 ``[3, H, W]`` in [0, 1] and its mask as int64 ``[H, W]`` class indices."""
    with Image.open(image_path) as image_file, Image.open(mask_path) as mask_file:
        image = np.array(image_file.convert("RGB"))
        mask = np.asarray(mask_file.convert("RGB"))
    if image.shape != mask.shape:
        raise BadInput(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.shape[1]}x{image.shape[0]}"
        )
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255.0), torch.from_numpy(mask_to_classes(mask))


def read_part(tile: int, part: int, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image of a tile by its number (``image_part_007`` is part 7), as :func:`read_pair` returns it."""
    folder = (root or data_dir()) / f"tile_{tile}"
    name = f"image_part_{part:03d}"
    return read_pair(folder / "images" / f"{name}.jpg", folder / "masks" / f"{name}.png")


def load_tile(tile: int, root: Path | None = None) -> list[Sample]:
    """The samples ``{"image", "mask", "tile", "name"}`` of one tile, in file-name order."""
    folder = (root or data_dir()) / f"tile_{tile}"
    images = sorted((folder / "images").glob("*.jpg"))
    if not images:
        raise BadInput(f"{folder / 'images'}: no JPEG images")
    samples = []
    for image_path in images:
        mask_path = folder / "masks" / f"{image_path.stem}.png"
        if not mask_path.is_file():
            raise BadInput(f"{mask_path}: mask missing for {image_path.name}")
        image, mask = read_pair(image_path, mask_path)
        samples.append({"image": image, "mask": mask, "tile": tile, "name": image_path.stem})
    return samples


def load_tiles(tiles: Iterable[int] = TILES, root: Path | None = None) -> dict[int, list[Sample]]:
    root = root or data_dir()
    return {tile: load_tile(tile, root) for tile in tiles}
