"""Segment a whole scene with overlapping tiles, in strips, so memory grows with width, not height.

Overlapping tile predictions are averaged as probabilities under a smooth (Hann) weight, which
hides tile seams. Only ``tile`` rows of probabilities are held at once: after each strip of
tiles the rows no later tile can touch are turned into classes, written and dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from backend.class_raster import CLASS_NODATA, SegClass, SegmentationWriter, parse_classes
from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.raster_io import SceneReader
from backend.roi import Roi, whole_raster

Predict = Callable[[np.ndarray], np.ndarray]  # float32 [B, C, T, T] in [0, 1] -> probabilities [B, K, T, T]
WEIGHT_FLOOR = 1e-3  # keeps the outermost pixels of the raster, seen by one tile only, weighted
# GDAL's block cache defaults to 5 % of RAM and fills with blocks never read again; two block
# rows of input are all a strip needs: 256 MB holds them for uint8 RGB up to ~80000 px wide.
GDAL_CACHE_MB = 256


def tile_starts(offset: int, length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, the last one flush with the far edge."""
    size = min(tile, length)
    last = offset + length - size
    starts = list(range(offset, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def tile_windows(roi_window: Window, tile: int, stride: int) -> Iterator[Window]:
    """Row-major tile windows covering ``roi_window`` exactly; a side shorter than ``tile`` gives one
    tile that side long (the segmenter pads it by reflection)."""
    col, row = int(roi_window.col_off), int(roi_window.row_off)
    width, height = int(roi_window.width), int(roi_window.height)
    for top in tile_starts(row, height, tile, stride):
        for left in tile_starts(col, width, tile, stride):
            yield Window(left, top, min(tile, width), min(tile, height))


def blend_weights(height: int, width: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """2-D Hann window, highest in the middle of the tile, never below ``floor``."""

    def hann(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.maximum(np.outer(hann(height), hann(width)), floor).astype(np.float32)


def check_tiling(tile: int, stride: int, batch_size: int) -> None:
    if tile < 1:
        raise BadInput(f"tile size {tile}: must be at least 1 pixel")
    if not 1 <= stride <= tile:
        raise BadInput(f"stride {stride}: must lie in 1..{tile} (the tile size) or tiles would leave gaps")
    if batch_size < 1:
        raise BadInput(f"batch size {batch_size}: must be at least 1")


@dataclass(frozen=True)
class SegmentResult:
    """What was written, for the caller to report and load."""

    class_path: Path
    confidence_path: Path | None
    entropy_path: Path | None
    window: Window  # the ROI in the input raster's pixels; the outputs cover exactly this
    tiles: int  # tiles predicted (tiles with no valid pixel are skipped)
    class_pixels: dict[int, int]  # pixels per class value
    nodata_pixels: int


def _pad(image: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad [C, h, w] to [C, tile, tile]."""
    pad_h, pad_w = tile - image.shape[1], tile - image.shape[2]
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")


class _StripAccumulator:
    """Weighted probability sums for ``tile`` rows x ROI width, shifted down as rows are finished."""

    def __init__(self, n_classes: int, rows: int, width: int) -> None:
        self.probs = np.zeros((n_classes, rows, width), np.float32)
        self.weight = np.zeros((rows, width), np.float32)
        self.valid = np.zeros((rows, width), bool)

    def add(self, col: int, probs: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> None:
        height, width = weights.shape
        self.probs[:, :height, col : col + width] += probs[:, :height, :width] * weights
        self.weight[:height, col : col + width] += weights
        self.valid[:height, col : col + width] |= valid

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove the top ``rows`` rows: (blended probabilities [K, rows, W], valid [rows, W])."""
        weight = self.weight[:rows]
        probs = self.probs[:, :rows] / np.where(weight > 0, weight, 1.0)
        valid = self.valid[:rows].copy()
        for buffer in (self.probs, self.weight, self.valid):
            buffer[..., : buffer.shape[-2] - rows, :] = buffer[..., rows:, :]
            buffer[..., buffer.shape[-2] - rows :, :] = 0
        return probs, valid


def _predict_batch(predict: Predict, batch: np.ndarray, n_classes: int) -> np.ndarray:
    probs = np.asarray(predict(batch), dtype=np.float32)
    expected = (batch.shape[0], n_classes, batch.shape[2], batch.shape[3])
    if probs.shape != expected:
        raise ValueError(f"predict returned shape {probs.shape}, expected {expected} ({n_classes} classes)")
    return probs


def segment_scene(
    reader: SceneReader,
    predict: Predict,
    output: str | os.PathLike,
    *,
    classes: Sequence[Mapping[str, Any] | SegClass],
    tile: int = 512,
    stride: int = 341,
    batch_size: int = 4,
    roi: Roi | None = None,
    confidence: str | os.PathLike | None = None,
    entropy: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
    metadata: Mapping[str, Any] | None = None,
) -> SegmentResult:
    """Segment ``roi`` (default: the whole raster) of ``reader`` and write the class raster to ``output``.

    ``predict`` maps float32 [B, C, tile, tile] in [0, 1] to class probabilities [B, K, tile, tile],
    K = len(classes), channel k meaning ``classes[k]``. Nodata pixels are fed as zeros, pixels
    outside the ROI polygons keep their data as context; both are written as 255 (NaN in the
    confidence and entropy rasters). Tiles with no valid pixel are not predicted.
    """
    seg_classes = parse_classes(classes)
    check_tiling(tile, stride, batch_size)
    for path in (output, confidence, entropy):
        if path is not None and Path(path).resolve() == Path(reader.path).resolve():
            raise BadInput(f"{path}: an output would replace the input raster")
    roi = roi if roi is not None else whole_raster(reader)
    col0, row0 = int(roi.window.col_off), int(roi.window.row_off)
    width, height = int(roi.window.width), int(roi.window.height)
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows = tile_starts(row0, height, tile, stride)
    cols = tile_starts(col0, width, tile, stride)
    weights = blend_weights(tile_h, tile_w)
    values = np.array([c.value for c in seg_classes], np.uint8)
    n_classes = len(seg_classes)
    accumulator = _StripAccumulator(n_classes, tile_h, width)
    counts = np.zeros(256, np.int64)
    total, done, predicted = len(rows) * len(cols), 0, 0
    tags = {
        "SOURCE": str(reader.path),
        "BAND_MAPPING": ",".join(str(b) for b in reader.bands),
        "STRETCH": reader.stretch.to_dict(),
        "ROI_WINDOW": [col0, row0, width, height],
        "TILE": tile,
        "STRIDE": stride,
        **(metadata or {}),
    }
    writer = SegmentationWriter(
        output,
        width=width,
        height=height,
        crs=reader.crs,
        transform=window_transform(roi.window, reader.transform),
        classes=seg_classes,
        confidence=confidence,
        entropy=entropy,
        overwrite=overwrite,
        metadata=tags,
    )
    progress(0.0, f"segmenting {total} tiles")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), writer:
        for i, top in enumerate(rows):
            strip = [Window(left, top, tile_w, tile_h) for left in cols]
            for first in range(0, len(strip), batch_size):
                check_cancelled(is_cancelled)
                batch_windows = strip[first : first + batch_size]
                reads = [reader.read(w) for w in batch_windows]
                kept = []
                for window, (image, valid) in zip(batch_windows, reads, strict=True):
                    valid &= roi.mask(window)
                    if valid.any():
                        kept.append((window, image, valid))
                if kept:
                    batch = np.stack([_pad(image, tile) for _, image, _ in kept])
                    probs = _predict_batch(predict, batch, n_classes)
                    for (window, _, valid), tile_probs in zip(kept, probs, strict=True):
                        accumulator.add(int(window.col_off) - col0, tile_probs, weights, valid)
                    predicted += len(kept)
                done += len(batch_windows)
                progress(0.95 * done / total, f"tile {done}/{total}")
            finished = (rows[i + 1] if i + 1 < len(rows) else row0 + height) - top
            probs, valid = accumulator.take(finished)
            labels = np.where(valid, values[probs.argmax(axis=0)], CLASS_NODATA).astype(np.uint8)
            counts += np.bincount(labels.ravel(), minlength=256)
            writer.write_rows(
                labels,
                np.where(valid, probs.max(axis=0), np.nan).astype(np.float32) if confidence is not None else None,
                _entropy(probs, valid) if entropy is not None else None,
            )
        progress(0.95, "writing overviews and class names")
    progress(1.0, "done")
    return SegmentResult(
        class_path=Path(output),
        confidence_path=Path(confidence) if confidence is not None else None,
        entropy_path=Path(entropy) if entropy is not None else None,
        window=roi.window,
        tiles=predicted,
        class_pixels={int(c.value): int(counts[c.value]) for c in seg_classes},
        nodata_pixels=int(counts[CLASS_NODATA]),
    )


def _entropy(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Shannon entropy of [K, H, W] probabilities divided by log K: 0 = certain, 1 = uniform."""
    n_classes = probs.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    scale = math.log(n_classes) if n_classes > 1 else 1.0
    entropy = -terms.sum(axis=0) / scale
    return np.where(valid, entropy, np.nan).astype(np.float32)
