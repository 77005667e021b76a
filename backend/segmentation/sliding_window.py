"""Segment whole scenes with overlapping tiles, in panels and strips, so memory does not grow with their size.

Overlapping tile predictions are either averaged as probabilities under a smooth (Hann) weight, which
hides tile seams, or each pixel keeps the prediction of the tile whose centre is nearest (``Tiling.blend``).
A scene wider than ``PANEL_COLUMNS`` is done one band of columns (a panel) at a time,
each with the tiles that touch it; within a panel only ``tile`` rows of probabilities are held at
once: after each strip of tiles the rows no later tile can touch are turned into classes, written
and dropped. Every pixel sums the same tiles in the same order as without panels, so the outputs are
identical (to a float rounding where a tile's probabilities depend on the batch it was predicted in).
The tiles that straddle a panel edge are predicted once: an executor that carries edges
(:class:`LocalStrips`) keeps, of each strip of the left panel, the sums of the columns right of the
edge (only those tiles reach there) in a scratch file, and the right panel's strip starts from them
instead of predicting those tiles again; memory stays bounded by the panel width whatever the scene's
height. Executors that do not (:class:`backend.segmentation.cluster.DaskStrips`, whose strips run
apart) predict them once per panel.

One executor interface for every raster and every machine: :func:`segment_jobs` writes the rasters of a
list of :class:`RasterJob` from the strips a :class:`StripExecutor` predicts, in order: :class:`LocalStrips`
in this process, :class:`backend.segmentation.cluster.DaskStrips` on Dask workers.
"""

from __future__ import annotations

import math
import os
import queue
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.rasters.class_raster import CLASS_NODATA, SegClass, SegmentationWriter, parse_classes
from backend.rasters.raster_io import NoCrsWarning, SceneReader, Stretch
from backend.rasters.roi import Roi, whole_raster
from backend.segmentation.tiling import Tiling

Predict = Callable[[np.ndarray], np.ndarray]  # float32 [B, C, T, T] in [0, 1] -> probabilities [B, K, T, T]
WEIGHT_FLOOR = 1e-3  # keeps the outermost pixels of the raster, seen by one tile only, weighted
# GDAL's block cache defaults to 5 % of RAM and fills with blocks never read again (written output
# blocks too); two block rows of a panel's input are all a strip needs: 64 MB holds them for 16-bit
# 4-band input up to 8000 px wide per block row (a wider striped input is decoded again, not wrong).
GDAL_CACHE_MB = 64
# Output columns per panel: a multiple of the class raster's 512-px blocks, so no block is written twice.
# Memory then stops growing past this width; the tiles straddling an edge are predicted once when the executor
# carries their sums across the edge (LocalStrips), twice otherwise (one column of 512-px tiles per edge at stride
# 448: 25 columns instead of 23 at 10240 px; docs/performance.md).
PANEL_COLUMNS = 4096
# Strips each stage of the local executor may be ahead of the next: reading ahead of the forward, the forward
# ahead of the writer. One keeps all three busy; each strip held costs a strip of tiles or of sums (tens of MB).
STRIPS_AHEAD = 1
QUEUE_POLL_SECONDS = 0.1  # how often a waiting stage checks whether the run has stopped


def tile_starts(offset: int, length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, the last one flush with the far edge."""
    size = min(tile, length)
    last = offset + length - size
    starts = list(range(offset, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def kept_spans(starts: Sequence[int], offset: int, length: int, size: int, blend: str) -> tuple[tuple[int, int], ...]:
    """Along one axis, the pixels ``[lo, hi)`` each tile contributes: all of it under ``hann``; under ``centre``
    those nearer its centre than any other tile's, the first and last tile reaching the ROI's edges, so the
    spans partition the ROI."""
    if blend == "hann":
        return tuple((start, start + size) for start in starts)
    bounds = [offset, *((a + b + size) // 2 for a, b in pairwise(starts)), offset + length]
    return tuple(pairwise(bounds))


def blend_weights(height: int, width: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """2-D Hann window, highest in the middle of the tile, never below ``floor``."""

    def hann(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.maximum(np.outer(hann(height), hann(width)), floor).astype(np.float32)


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


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a ROI lie: strips of tiles sharing a top row, each tile ``tile_h`` x ``tile_w``, and the
    rows and columns each strip and tile contributes (its kept spans, absolute pixels)."""

    window: Window  # the ROI's pixel window in the raster
    tiling: Tiling
    tops: tuple[int, ...]
    lefts: tuple[int, ...]
    rows: tuple[tuple[int, int], ...]  # kept rows of each strip
    cols: tuple[tuple[int, int], ...]  # kept columns of each tile of a strip
    # A panel's columns (window-relative) from which its strips' sums start as the previous panel left them
    # (the tiles across the edge, not in ``lefts``), and from which they go on to the next panel; None: neither.
    carry_in: int | None = None
    carry_out: int | None = None

    @classmethod
    def over(cls, window: Window, tiling: Tiling) -> TileGrid:
        col, row = int(window.col_off), int(window.row_off)
        width, height = int(window.width), int(window.height)
        tops = tile_starts(row, height, tiling.tile, tiling.stride)
        lefts = tile_starts(col, width, tiling.tile, tiling.stride)
        return cls(
            window,
            tiling,
            tuple(tops),
            tuple(lefts),
            kept_spans(tops, row, height, min(tiling.tile, height), tiling.blend),
            kept_spans(lefts, col, width, min(tiling.tile, width), tiling.blend),
        )

    @property
    def tile_h(self) -> int:
        return min(self.tiling.tile, int(self.window.height))

    @property
    def tile_w(self) -> int:
        return min(self.tiling.tile, int(self.window.width))

    @property
    def strips(self) -> int:
        return len(self.tops)

    @property
    def tiles(self) -> int:
        return len(self.tops) * len(self.lefts)

    def strip(self, index: int) -> list[Window]:
        return [Window(left, self.tops[index], self.tile_w, self.tile_h) for left in self.lefts]

    def weights(self) -> np.ndarray:
        """Each tile's blending weight: a Hann window, or equal weights where only kept spans are added."""
        if self.tiling.blend == "hann":
            return blend_weights(self.tile_h, self.tile_w)
        return np.ones((self.tile_h, self.tile_w), np.float32)

    def finished_rows(self, index: int) -> int:
        """Rows no later strip touches once strip ``index`` is added: up to the next strip's top."""
        end = self.tops[index + 1] if index + 1 < len(self.tops) else int(self.window.row_off + self.window.height)
        return end - self.tops[index]

    def panels(self, columns: int | None = None, carry: bool = False) -> list[Panel]:
        """The ROI's columns in bands of ``columns`` (default ``PANEL_COLUMNS``), each with the grid of this
        grid's tiles whose kept columns reach into it; with ``carry``, a panel after the first leaves out the
        tiles across its left edge, whose sums right of the edge its strips take from the previous panel's."""
        columns = columns or PANEL_COLUMNS
        col0, width = int(self.window.col_off), int(self.window.width)
        panels = []
        for start in range(0, width, columns):
            stop = min(width, start + columns)
            touching = [i for i, (lo, hi) in enumerate(self.cols) if lo - col0 < stop and hi - col0 > start]
            left, right = self.lefts[touching[0]], self.lefts[touching[-1]] + self.tile_w
            span = Window(left, self.window.row_off, right - left, self.window.height)
            offset = col0 + start - left
            carry_in = offset if carry and start > 0 else None
            if carry_in is not None:  # the tiles across the edge: the previous panel predicted them
                touching = [i for i in touching if self.cols[i][0] - col0 >= start]
            carry_out = col0 + stop - left if carry and stop < width else None
            grid = replace(
                self,
                window=span,
                lefts=tuple(self.lefts[i] for i in touching),
                cols=tuple(self.cols[i] for i in touching),
                carry_in=carry_in,
                carry_out=carry_out,
            )
            panels.append(Panel(start, stop, offset, grid))
        return panels


@dataclass(frozen=True)
class Panel:
    """Output columns ``start:stop`` of the ROI and the tiles that cover them (``grid``, whose window is
    the columns those tiles span, a little wider)."""

    start: int  # ROI-relative
    stop: int
    offset: int  # where column ``start`` lies in the grid's window
    grid: TileGrid


@dataclass
class StripSums:
    """One strip of tiles predicted: Hann-weighted probability sums over ``tile_h`` rows x the ROI width.

    Strips are summed on their own and then added to the running sums, on one machine as on a cluster,
    so that the floating-point additions, hence the outputs, are the same wherever a strip was predicted.
    """

    index: int
    probs: np.ndarray  # float32 [K, tile_h, W]
    weight: np.ndarray  # float32 [tile_h, W]
    valid: np.ndarray  # bool [tile_h, W]
    tiles: int  # tiles predicted (those with a valid pixel)


@dataclass
class StripTiles:
    """One strip's tiles read, checked and padded, in batches: all a forward needs, no file handle."""

    index: int
    batches: list[tuple[list[tuple[int, int, int, np.ndarray]], np.ndarray]]  # ([(left, c0, c1, valid)], images)


def read_strip(
    reader: SceneReader,
    grid: TileGrid,
    index: int,
    *,
    roi: Roi,
    batch_size: int,
    is_cancelled: CancelFn = never_cancelled,
) -> StripTiles:
    """Read the tiles of strip ``index`` in batches, leaving out those with no valid pixel in their kept span."""
    top = grid.tops[index]
    r0, r1 = (row - top for row in grid.rows[index])
    strip = list(zip(grid.strip(index), grid.cols, strict=True))
    batches = []
    for first in range(0, len(strip), batch_size):
        check_cancelled(is_cancelled)
        kept, images = [], []
        for window, (lo, hi) in strip[first : first + batch_size]:
            image, valid = reader.read(window)
            left = int(window.col_off)
            valid = valid[r0:r1, lo - left : hi - left] & roi.mask(window)[r0:r1, lo - left : hi - left]
            if valid.any():
                kept.append((left, lo - left, hi - left, valid))
                images.append(_pad(image, grid.tiling.tile))
        if kept:
            batches.append((kept, np.stack(images)))
    return StripTiles(index, batches)


def sum_strip(
    tiles: StripTiles,
    grid: TileGrid,
    predict: Predict,
    n_classes: int,
    is_cancelled: CancelFn = never_cancelled,
    carried: Carried | None = None,
) -> StripSums:
    """Predict a strip's batches and add each tile's kept span, weighted, into the strip's sums, which start
    from the previous panel's ``carried`` sums (the tiles across the edge, first in the order) at
    ``grid.carry_in``, from zeros elsewhere."""
    col0, width = int(grid.window.col_off), int(grid.window.width)
    weights = grid.weights()
    r0, r1 = (row - grid.tops[tiles.index] for row in grid.rows[tiles.index])
    sums = StripSums(
        tiles.index,
        np.zeros((n_classes, grid.tile_h, width), np.float32),
        np.zeros((grid.tile_h, width), np.float32),
        np.zeros((grid.tile_h, width), bool),
        0,
    )
    if carried is not None and grid.carry_in is not None:
        cols = slice(grid.carry_in, grid.carry_in + carried.weight.shape[-1])
        sums.probs[:, :, cols], sums.weight[:, cols], sums.valid[:, cols] = carried
    weighted = np.empty((n_classes, r1 - r0, grid.tile_w), np.float32)  # one buffer for every tile's product
    for kept, batch in tiles.batches:
        check_cancelled(is_cancelled)
        probs = _predict_batch(predict, batch, n_classes)
        for (left, c0, c1, valid), tile_probs in zip(kept, probs, strict=True):
            cols = slice(left - col0 + c0, left - col0 + c1)
            weight = weights[r0:r1, c0:c1]
            product = np.multiply(tile_probs[:, r0:r1, c0:c1], weight, out=weighted[:, :, : c1 - c0])
            sums.probs[:, r0:r1, cols] += product
            sums.weight[r0:r1, cols] += weight
            sums.valid[r0:r1, cols] |= valid
        sums.tiles += len(kept)
    return sums


class Carried(NamedTuple):
    """A strip's sums right of a panel edge, as the panel left of it summed them."""

    probs: np.ndarray  # float32 [K, tile_h, w]
    weight: np.ndarray  # float32 [tile_h, w]
    valid: np.ndarray  # bool [tile_h, w]

    @classmethod
    def of(cls, sums: StripSums, column: int) -> Carried:
        return cls(sums.probs[:, :, column:], sums.weight[:, column:], sums.valid[:, column:])

    def save(self, path: Path) -> Path:
        np.savez(path, *self)
        return path

    @classmethod
    def load(cls, path: Path) -> Carried:
        with np.load(path) as saved:
            carried = cls(*(saved[f"arr_{i}"] for i in range(3)))
        path.unlink()
        return carried


class _StripAccumulator:
    """The sums of the rows that the strips added so far have not finished (the top rows of the next strip,
    which it adds to): a strip's sums become the running sums, so only the overlap is ever added twice."""

    def __init__(self) -> None:
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def finish(self, strip: StripSums, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add the rows still pending into ``strip`` (in place) and return its top ``rows`` rows, finished:
        (probability sums [K, rows, W], their weights [rows, W], valid [rows, W]); the rows below wait for the
        next strip."""
        if self._pending is not None:
            probs, weight, valid = self._pending
            overlap = weight.shape[0]
            strip.probs[:, :overlap] += probs
            strip.weight[:overlap] += weight
            strip.valid[:overlap] |= valid
        self._pending = (strip.probs[:, rows:], strip.weight[rows:], strip.valid[rows:])
        return strip.probs[:, :rows], strip.weight[:rows], strip.valid[:rows]


def class_argmax(scores: np.ndarray) -> np.ndarray:
    """``scores.argmax(axis=0)`` for [K, H, W] as uint8, one class plane at a time: numpy's argmax over the first
    axis walks K values at a stride of H x W per pixel, several times slower. Ties go to the lower class, as there."""
    best = scores[0].copy()
    index = np.zeros(best.shape, np.uint8)
    higher = np.empty(best.shape, bool)
    for k in range(1, scores.shape[0]):
        np.greater(scores[k], best, out=higher)
        index[higher] = k
        np.maximum(best, scores[k], out=best)
    return index


def _predict_batch(predict: Predict, batch: np.ndarray, n_classes: int) -> np.ndarray:
    probs = np.asarray(predict(batch), dtype=np.float32)
    expected = (batch.shape[0], n_classes, batch.shape[2], batch.shape[3])
    if probs.shape != expected:
        raise ValueError(f"predict returned shape {probs.shape}, expected {expected} ({n_classes} classes)")
    return probs


class StripAssembler:
    """The one writer of a scene: panel after panel (:attr:`panels`, each opened with :meth:`begin`), strips
    added in order become finished rows of the panel's columns of the output rasters.

    A context manager like the :class:`SegmentationWriter` it drives: the outputs appear complete on a
    clean exit and not at all otherwise.
    """

    def __init__(
        self,
        reader: SceneReader,
        output: str | os.PathLike,
        *,
        classes: Sequence[Mapping[str, Any] | SegClass],
        grid: TileGrid,
        carry: bool = False,
        confidence: str | os.PathLike | None = None,
        entropy: str | os.PathLike | None = None,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        for path in (output, confidence, entropy):
            if path is not None and Path(path).resolve() == Path(reader.path).resolve():
                raise BadInput(f"{path}: an output would replace the input raster")
        self.classes = parse_classes(classes)
        self.grid = grid
        self.panels = grid.panels(carry=carry)  # carry: as the executor, which carries edges or not
        self.paths = (Path(output), _path(confidence), _path(entropy))
        self._values = np.array([c.value for c in self.classes], np.uint8)
        self._panel: Panel | None = None
        self._accumulator: _StripAccumulator | None = None
        self._counts = np.zeros(256, np.int64)
        self._next = 0
        self._tiles = 0
        col0, row0 = int(grid.window.col_off), int(grid.window.row_off)
        tags = {
            "SOURCE": str(reader.path),
            "BAND_MAPPING": ",".join(str(b) for b in reader.bands),
            "STRETCH": reader.stretch.to_dict(),
            "ROI_WINDOW": [col0, row0, int(grid.window.width), int(grid.window.height)],
            "TILE": grid.tiling.tile,
            "STRIDE": grid.tiling.stride,
            "BLEND": grid.tiling.blend,
            **(metadata or {}),
        }
        self._writer = SegmentationWriter(
            output,
            width=int(grid.window.width),
            height=int(grid.window.height),
            crs=reader.crs,
            transform=window_transform(grid.window, reader.transform),
            classes=self.classes,
            confidence=confidence,
            entropy=entropy,
            overwrite=overwrite,
            metadata=tags,
        )

    def __enter__(self) -> StripAssembler:
        self._writer.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._writer.__exit__(exc_type, exc, tb)

    @property
    def tiles_to_predict(self) -> int:
        """Tiles over all panels: the grid's, plus those straddling a panel edge once more unless carried."""
        return sum(panel.grid.tiles for panel in self.panels)

    def begin(self, panel: Panel) -> None:
        """Start the next panel; the previous one must have had all its strips."""
        previous = self._panel
        if previous is not None and self._next != previous.grid.strips:
            raise ValueError(f"panel at column {previous.start} got {self._next} of {previous.grid.strips} strips")
        self._panel, self._next = panel, 0
        self._accumulator = _StripAccumulator()
        self._writer.begin_columns(panel.start, panel.stop - panel.start)

    def add(self, strip: StripSums) -> None:
        """Add the panel's next strip and write the rows it finishes."""
        if self._panel is None or self._accumulator is None:
            raise ValueError("begin a panel before adding strips")
        if strip.index != self._next:
            raise ValueError(f"strip {strip.index} came before strip {self._next}")
        self._next += 1
        self._tiles += strip.tiles
        sums, weight, valid = self._accumulator.finish(strip, self._panel.grid.finished_rows(strip.index))
        own = slice(self._panel.offset, self._panel.offset + self._panel.stop - self._panel.start)
        sums, weight, valid = sums[:, :, own], weight[:, own], valid[:, own]
        # A pixel's weight divides all its classes alike, so the classes come from the sums; probabilities are
        # only divided out for the confidence and entropy rasters.
        labels = np.where(valid, self._values[class_argmax(sums)], CLASS_NODATA).astype(np.uint8)
        self._counts += np.bincount(labels.ravel(), minlength=256)
        _, confidence, entropy = self.paths
        probs = sums / np.where(weight > 0, weight, 1.0) if confidence is not None or entropy is not None else None
        self._writer.write_rows(
            labels,
            np.where(valid, probs.max(axis=0), np.nan).astype(np.float32) if confidence is not None else None,
            _entropy(probs, valid) if entropy is not None else None,
        )

    def result(self) -> SegmentResult:
        class_path, confidence, entropy = self.paths
        return SegmentResult(
            class_path=class_path,
            confidence_path=confidence,
            entropy_path=entropy,
            window=self.grid.window,
            tiles=self._tiles,
            class_pixels={int(c.value): int(self._counts[c.value]) for c in self.classes},
            nodata_pixels=int(self._counts[CLASS_NODATA]),
        )


def _path(path: str | os.PathLike | None) -> Path | None:
    return Path(path) if path is not None else None


@dataclass(frozen=True)
class StripSource:
    """One raster's strips as an executor sees them: a path, the band mapping and stretch, no open file, so that
    it travels to a Dask worker as well as it stays here."""

    path: str
    bands: tuple[int, ...]
    n_inputs: int
    stretch: Stretch
    roi: Roi
    grid: TileGrid
    n_classes: int
    batch_size: int

    def open_reader(self) -> SceneReader:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoCrsWarning)  # the reader the job was planned with warned once already
            return SceneReader(self.path, self.bands, self.n_inputs, stretch=self.stretch)

    def read(self, reader: SceneReader, index: int, is_cancelled: CancelFn = never_cancelled) -> StripTiles:
        return read_strip(reader, self.grid, index, roi=self.roi, batch_size=self.batch_size, is_cancelled=is_cancelled)

    def sum(
        self,
        tiles: StripTiles,
        predict: Predict,
        is_cancelled: CancelFn = never_cancelled,
        carried: Carried | None = None,
    ) -> StripSums:
        return sum_strip(tiles, self.grid, predict, self.n_classes, is_cancelled, carried)


@dataclass(frozen=True)
class RasterJob:
    """One raster to segment, planned once: its strips and the files to write for it."""

    source: StripSource
    output: str
    confidence: str | None = None
    entropy: str | None = None
    overwrite: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)  # tags of the outputs (model, engine, ...)

    @classmethod
    def plan(
        cls,
        reader: SceneReader,
        roi: Roi,
        tiling: Tiling,
        *,
        n_classes: int,
        batch_size: int,
        output: str | os.PathLike,
        confidence: str | os.PathLike | None = None,
        entropy: str | os.PathLike | None = None,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> RasterJob:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BadInput(f"batch size {batch_size!r}: must be a whole number of at least 1")
        source = StripSource(
            path=os.path.abspath(reader.path),
            bands=tuple(reader.bands),
            n_inputs=len(reader.bands),
            stretch=reader.stretch,
            roi=roi,
            grid=TileGrid.over(roi.window, tiling),
            n_classes=n_classes,
            batch_size=batch_size,
        )
        return cls(source, str(output), _str(confidence), _str(entropy), overwrite, dict(metadata or {}))


Strip = tuple[StripSource, int]  # a panel's source and the strip's index in it


class StripExecutor(Protocol):
    """Predicts strips wherever it runs them and yields their sums in the order given; ``carries_edges``: whether
    it takes a panel's strips' sums across the edge to the next panel (then the grids it is given say where)."""

    carries_edges: bool

    def where(self) -> str:
        """Where the strips are predicted, for the progress message."""

    def run(self, strips: Sequence[Strip], is_cancelled: CancelFn) -> Generator[StripSums]: ...


class LocalStrips:
    """Predicts the strips in this process, in three stages that overlap: a reader thread reads and pads the
    tiles of the coming strips, a forward thread predicts and sums them, and the caller writes the strips it
    is given. onnxruntime, GDAL and numpy's large operations release the GIL, so the forward keeps running
    while the other two stages read and write; each stage is at most ``ahead`` strips ahead of the next,
    so memory stays bounded (``ahead=0``: one stage after the other, in the caller's thread; default
    ``STRIPS_AHEAD``).

    The forward stage carries each strip's sums across a panel edge through a scratch folder (``scratch``,
    default the system's temporary folder): one strip's worth (``tile`` rows x the overlap) per strip of a
    panel on disk, a strip's worth in memory."""

    carries_edges = True

    def __init__(self, predict: Predict, ahead: int | None = None, scratch: str | os.PathLike | None = None) -> None:
        self.predict = predict
        self.ahead = STRIPS_AHEAD if ahead is None else ahead
        self.scratch = scratch

    def where(self) -> str:
        return "in this process"

    def run(self, strips: Sequence[Strip], is_cancelled: CancelFn) -> Generator[StripSums]:
        read = self._read(strips, is_cancelled)
        if not self.ahead:
            with closing(read):
                yield from self._sum(read, is_cancelled)
            return
        stop = threading.Event()  # one for the run: a stage waiting on another stops when the run does
        with (
            _Stage(read, self.ahead, stop) as tiles,
            _Stage(self._sum(tiles, is_cancelled), self.ahead, stop) as sums,
        ):
            yield from sums

    def _read(self, strips: Sequence[Strip], is_cancelled: CancelFn) -> Iterator[tuple[StripSource, StripTiles]]:
        """GDAL's configuration is the process's: the caller's ``rasterio.Env`` caps the cache in this thread too."""
        with ExitStack() as stack:
            reader, path = None, None
            for source, index in strips:
                if source.path != path:
                    stack.close()
                    reader, path = stack.enter_context(source.open_reader()), source.path
                yield source, source.read(reader, index, is_cancelled)

    def _sum(self, read: Iterator[tuple[StripSource, StripTiles]], is_cancelled: CancelFn) -> Iterator[StripSums]:
        """Strips come panel after panel, each panel's in order, so the next panel takes the carried sums in the
        order the previous one left them."""
        with tempfile.TemporaryDirectory(prefix="crossearth-edges-", dir=self.scratch) as folder:
            carried: deque[Path] = deque()
            for number, (source, tiles) in enumerate(read):
                start = Carried.load(carried.popleft()) if source.grid.carry_in is not None else None
                sums = source.sum(tiles, self.predict, is_cancelled, start)
                if source.grid.carry_out is not None:
                    carried.append(Carried.of(sums, source.grid.carry_out).save(Path(folder) / f"{number}.npz"))
                yield sums


class _Stage:
    """Runs an iterator in a thread of its own, at most ``ahead`` items ahead of the thread iterating this.

    An error in the thread is raised in the consumer; leaving the ``with`` block (done, an error, a cancel)
    sets ``stop``, which every stage of the run watches, and waits for the thread, so no stage outlives the run.
    """

    _DONE = object()

    def __init__(self, items: Iterator[Any], ahead: int, stop: threading.Event) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = stop
        self._thread = threading.Thread(target=self._work, name="crossearth-strips", daemon=True)

    def __enter__(self) -> Iterator[Any]:
        self._thread.start()
        return self._results()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()  # the stage upstream of this one, if any, stops too

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            with suppress(queue.Full):
                self._queue.put(item, timeout=QUEUE_POLL_SECONDS)
                return True
        return False

    def _results(self) -> Iterator[Any]:
        while True:
            try:
                item = self._queue.get(timeout=QUEUE_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is self._DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def segment_jobs(
    jobs: Sequence[RasterJob],
    executor: StripExecutor,
    classes: Sequence[Mapping[str, Any] | SegClass],
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> list[SegmentResult]:
    """Write every job's outputs from the strips ``executor`` predicts; each output appears complete, or (error,
    cancel) not at all.

    The strips of all rasters are asked of the executor as one ordered stream, so that a cluster's workers keep
    busy across the boundary between two rasters, while the rasters are written here one at a time.
    """
    carry = getattr(executor, "carries_edges", False)
    panels = [job.source.grid.panels(carry=carry) for job in jobs]
    strips = [
        (replace(job.source, grid=panel.grid), index)
        for job, job_panels in zip(jobs, panels, strict=True)
        for panel in job_panels
        for index in range(panel.grid.strips)
    ]
    total = sum(panel.grid.tiles for job_panels in panels for panel in job_panels)
    progress(0.0, f"segmenting {total} tiles of {len(jobs)} raster(s) {executor.where()}")
    stream = executor.run(strips, is_cancelled)
    results, done = [], 0
    try:
        for number, job in enumerate(jobs, start=1):
            with job.source.open_reader() as reader:
                assembler = StripAssembler(
                    reader,
                    job.output,
                    classes=classes,
                    grid=job.source.grid,
                    carry=carry,
                    confidence=job.confidence,
                    entropy=job.entropy,
                    overwrite=job.overwrite,
                    metadata=job.metadata,
                )
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), assembler:
                strip_count, strip = sum(panel.grid.strips for panel in assembler.panels), 0
                for panel in assembler.panels:
                    assembler.begin(panel)
                    for _ in range(panel.grid.strips):
                        assembler.add(next(stream))
                        check_cancelled(is_cancelled)
                        done, strip = done + len(panel.grid.lefts), strip + 1
                        progress(0.95 * done / total, f"raster {number}/{len(jobs)}: strip {strip}/{strip_count}")
                progress(0.95 * done / total, f"raster {number}/{len(jobs)}: writing overviews and class names")
            results.append(assembler.result())
    finally:
        stream.close()  # the executor's own clean-up: readers closed, strips still in flight cancelled
    progress(1.0, "done")
    return results


def segment_scene(
    reader: SceneReader,
    predict: Predict,
    output: str | os.PathLike,
    *,
    classes: Sequence[Mapping[str, Any] | SegClass],
    tiling: Tiling,
    batch_size: int = 4,
    roi: Roi | None = None,
    confidence: str | os.PathLike | None = None,
    entropy: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
    metadata: Mapping[str, Any] | None = None,
) -> SegmentResult:
    """Segment ``roi`` (default: the whole raster) of ``reader`` in this process and write the class raster to
    ``output``: one :class:`RasterJob` on :class:`LocalStrips`.

    ``predict`` maps float32 [B, C, tile, tile] in [0, 1] to class probabilities [B, K, tile, tile],
    K = len(classes), channel k meaning ``classes[k]``. Nodata pixels are fed as zeros, pixels
    outside the ROI polygons keep their data as context; both are written as 255 (NaN in the
    confidence and entropy rasters). Tiles with no valid pixel are not predicted.
    """
    roi = roi if roi is not None else whole_raster(reader)
    job = RasterJob.plan(
        reader,
        roi,
        tiling,
        n_classes=len(classes),
        batch_size=batch_size,
        output=output,
        confidence=confidence,
        entropy=entropy,
        overwrite=overwrite,
        metadata=metadata,
    )
    return segment_jobs([job], LocalStrips(predict), classes, progress, is_cancelled)[0]


def _str(path: str | os.PathLike | None) -> str | None:
    return str(path) if path is not None else None


def _entropy(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Shannon entropy of [K, H, W] probabilities divided by log K: 0 = certain, 1 = uniform."""
    n_classes = probs.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    scale = math.log(n_classes) if n_classes > 1 else 1.0
    entropy = -terms.sum(axis=0) / scale
    return np.where(valid, entropy, np.nan).astype(np.float32)
