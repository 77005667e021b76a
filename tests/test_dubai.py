"""The Dubai loader: colour masks become the right class indices, unknown colours are ignored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.analysis.metrics import IGNORE_INDEX
from backend.errors import BadInput
from training.dubai import CLASSES, DATA_ENV, data_dir, load_tile, mask_to_classes, read_part


def _rgb(color: str) -> list[int]:
    return [int(color[i : i + 2], 16) for i in (1, 3, 5)]


def test_mask_colours_map_to_class_indices_and_others_to_ignore():
    colours = [_rgb(c["color"]) for c in CLASSES] + [[0x9B, 0x9B, 0x9B], [0, 0, 0], [0x3C, 0x10, 0x99]]
    mask = np.array([colours], dtype=np.uint8)
    assert mask_to_classes(mask).tolist() == [[0, 1, 2, 3, 4, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


def test_class_table_is_the_documented_one():
    assert [(c["value"], c["name"], c["color"]) for c in CLASSES] == [
        (0, "Building", "#3C1098"),
        (1, "Land", "#8429F6"),
        (2, "Road", "#6EC1E4"),
        (3, "Vegetation", "#FEDD3A"),
        (4, "Water", "#E2A929"),
    ]


def _write_fake_tile(root, tile: int, size: tuple[int, int] = (6, 4)) -> np.ndarray:
    width, height = size
    images, masks = root / f"tile_{tile}" / "images", root / f"tile_{tile}" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "image_part_001.jpg", quality=100)
    labels = np.array([_rgb(CLASSES[i % 5]["color"]) for i in range(width * height)], dtype=np.uint8)
    Image.fromarray(labels.reshape(height, width, 3)).save(masks / "image_part_001.png")
    return np.arange(width * height).reshape(height, width) % 5


def test_load_tile_reads_images_in_unit_range_and_masks_as_indices(tmp_path, monkeypatch):
    expected = _write_fake_tile(tmp_path, 1)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    (sample,) = load_tile(1)
    assert sample["tile"] == 1 and sample["name"] == "image_part_001"
    assert sample["image"].shape == (3, 4, 6) and sample["image"].dtype == torch.float32
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    assert sample["mask"].dtype == torch.int64
    assert sample["mask"].numpy().tolist() == expected.tolist()


def test_read_part_reads_one_image_of_a_tile_by_its_number(tmp_path):
    expected = _write_fake_tile(tmp_path, 3)
    image, mask = read_part(3, 1, tmp_path)
    assert image.shape == (3, 4, 6) and mask.numpy().tolist() == expected.tolist()


def test_missing_data_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(BadInput, match=f"nowhere.*{DATA_ENV}"):
        data_dir()


def test_missing_mask_is_named(tmp_path, monkeypatch):
    _write_fake_tile(tmp_path, 2)
    (tmp_path / "tile_2" / "masks" / "image_part_001.png").unlink()
    (tmp_path / "tile_1" / "images").mkdir(parents=True)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(BadInput, match=r"image_part_001\.png: mask missing"):
        load_tile(2)


def test_real_tile_6_has_all_classes_and_little_ignore():
    samples = load_tile(6)
    assert len(samples) == 9
    masks = torch.cat([s["mask"].flatten() for s in samples])
    counts = torch.bincount(masks, minlength=256)
    assert all(counts[c["value"]] > 0 for c in CLASSES)
    assert counts[IGNORE_INDEX] / masks.numel() < 0.05
    for sample in samples:
        assert sample["image"].shape[-2:] == sample["mask"].shape == (838, 859)
