"""Read a scene's bands as [0, 1] float tiles plus a validity mask, whatever its dtype and nodata.

The stretch is estimated once per scene from overviews or a sample of windows, never the
whole raster, so that a 20000 x 20000 scene costs no more to open than a small one.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from backend.errors import BadInput

PERCENTILES = (2.0, 98.0)
SAMPLE_WINDOW = 128  # side of each window read to estimate a stretch
SAMPLE_GRID = 8  # SAMPLE_GRID x SAMPLE_GRID windows: about a million pixels; smaller rasters are read whole
MAX_STRETCH_PIXELS = 1 << 24  # an overview up to this size is read whole for the stretch


class NoCrsWarning(UserWarning):
    """The raster has no CRS: outputs are in pixel space and cannot be placed on a map."""


@dataclass(frozen=True)
class RasterInfo:
    """What a user (or a dialog) needs to know about a raster before processing it."""

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | None
    colorinterp: tuple[str, ...]  # GDAL names: "red", "green", "blue", "alpha", "gray", "undefined", ...
    descriptions: tuple[str | None, ...]
    alpha_band: int | None  # 1-based index of the alpha band, if any
    has_dataset_mask: bool  # an internal or .msk per-dataset mask
    overview_count: int

    @property
    def data_bands(self) -> list[int]:
        """1-based indexes of the bands that carry data (all but alpha)."""
        return [b for b in range(1, self.count + 1) if b != self.alpha_band]


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if path.is_dir():
        raise BadInput(f"{path}: is a folder, not a raster file")


def open_raster(path: str | os.PathLike) -> rasterio.DatasetReader:
    """Open a raster or raise BadInput naming the file; rasterio's georeferencing warning is ours to give."""
    path = Path(path)
    _check_exists(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise BadInput(f"{path}: not a raster GDAL can read ({_one_line(exc)})") from exc


def _one_line(exc: BaseException) -> str:
    """The most specific message: rasterio's own often says "see previous exception"."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(str(exc).split()) or type(exc).__name__


def _probe_blocks(ds: rasterio.DatasetReader) -> None:
    """Read the first and last block: a truncated or corrupt file fails here, not mid-run."""
    block_h, block_w = ds.block_shapes[0]
    col, row = (ds.width - 1) // block_w * block_w, (ds.height - 1) // block_h * block_h
    first = Window(0, 0, min(block_w, ds.width), min(block_h, ds.height))
    last = Window(col, row, min(block_w, ds.width - col), min(block_h, ds.height - row))
    for window in (first, last):
        ds.read(window=window)
        ds.read_masks(window=window)


def _info_from_dataset(ds: rasterio.DatasetReader, path: Path) -> RasterInfo:
    colorinterp = tuple(ci.name for ci in ds.colorinterp)
    alpha = next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)
    return RasterInfo(
        path=str(path),
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtypes=tuple(ds.dtypes),
        crs=ds.crs,
        transform=ds.transform,
        nodata=ds.nodata,
        colorinterp=colorinterp,
        descriptions=tuple(ds.descriptions),
        alpha_band=alpha,
        has_dataset_mask=MaskFlags.per_dataset in ds.mask_flag_enums[0] and alpha is None,
        overview_count=len(ds.overviews(1)),
    )


def inspect_raster(path: str | os.PathLike) -> RasterInfo:
    """Describe a raster; a missing, unreadable, truncated or corrupt file raises BadInput."""
    path = Path(path)
    with open_raster(path) as ds:
        try:
            _probe_blocks(ds)
        except RasterioError as exc:
            raise BadInput(f"{path}: corrupt or truncated raster ({_one_line(exc)})") from exc
        return _info_from_dataset(ds, path)


def default_band_mapping(info: RasterInfo, n_inputs: int = 3) -> list[int]:
    """Red, green, blue by colour interpretation first (then the other data bands), else the first n bands."""
    data = info.data_bands
    if len(data) < n_inputs:
        raise BadInput(f"{info.path}: has {len(data)} data band(s), the model needs {n_inputs}")
    by_name = {name: b for b, name in zip(range(1, info.count + 1), info.colorinterp, strict=True)}
    if all(c in by_name for c in ("red", "green", "blue")):
        rgb = [by_name["red"], by_name["green"], by_name["blue"]]
        data = rgb + [b for b in data if b not in rgb]
    return data[:n_inputs]


def check_band_mapping(info: RasterInfo, bands: Sequence[int], n_inputs: int | None = None) -> list[int]:
    """Refuse a mapping that names a missing band or gives the model the wrong number of inputs."""
    bands = list(bands)
    missing = [b for b in bands if not 1 <= b <= info.count]
    if missing:
        raise BadInput(f"{info.path}: has {info.count} band(s), band mapping asks for band {missing[0]}")
    if n_inputs is not None and len(bands) != n_inputs:
        raise BadInput(f"{info.path}: band mapping {bands} gives {len(bands)} band(s), the model needs {n_inputs}")
    return bands


@dataclass(frozen=True)
class Stretch:
    """Per-band linear map of raw values onto [0, 1]; recorded in outputs so that it can be reproduced."""

    method: str  # "uint8" (x / 255) or "percentile"
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] | None = None
    source: str = field(default="dtype")  # "dtype", "overview", "windows" or "blocks"

    def apply(self, data: np.ndarray) -> np.ndarray:
        """[C, H, W] raw values -> float32 in [0, 1]."""
        low = np.asarray(self.low, np.float32)[:, None, None]
        span = np.asarray(self.high, np.float32)[:, None, None] - low
        out = (data.astype(np.float32, copy=False) - low) / span
        return np.clip(out, 0.0, 1.0, out=out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples), for output metadata."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stretch:
        pct = data.get("percentiles")
        return cls(
            method=data["method"],
            low=tuple(float(v) for v in data["low"]),
            high=tuple(float(v) for v in data["high"]),
            percentiles=tuple(pct) if pct is not None else None,
            source=data.get("source", "dtype"),
        )


def _valid_mask(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A pixel is valid when every band's GDAL mask says so (nodata, alpha, mask band) and no value is NaN."""
    valid = np.all(masks > 0, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.all(np.isfinite(data), axis=0)
    return valid


def _sample_windows(width: int, height: int) -> list[Window]:
    """A regular grid of small windows spread over the raster (all of it when small)."""
    if width * height <= (SAMPLE_WINDOW * SAMPLE_GRID) ** 2:
        return [Window(0, 0, width, height)]
    size_w, size_h = min(SAMPLE_WINDOW, width), min(SAMPLE_WINDOW, height)
    nx = min(SAMPLE_GRID, width // size_w)
    ny = min(SAMPLE_GRID, height // size_h)
    xs = np.linspace(0, width - size_w, nx).round().astype(int)
    ys = np.linspace(0, height - size_h, ny).round().astype(int)
    return [Window(int(x), int(y), size_w, size_h) for y in ys for x in xs]


def _valid_values(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[C, N] values of the valid pixels."""
    return data[:, _valid_mask(data, masks)]


def _overview_values(ds: rasterio.DatasetReader, bands: list[int]) -> np.ndarray | None:
    """Valid values of the finest overview small enough to read whole; None when there is none."""
    for factor in ds.overviews(bands[0]):
        shape = (len(bands), math.ceil(ds.height / factor), math.ceil(ds.width / factor))
        if shape[1] * shape[2] <= MAX_STRETCH_PIXELS:
            return _valid_values(ds.read(bands, out_shape=shape), ds.read_masks(bands, out_shape=shape))
    return None


def _window_values(
    ds: rasterio.DatasetReader, bands: list[int], windows: Iterable[Window], enough: int | None = None
) -> np.ndarray:
    """Valid values of the given windows, stopping once ``enough`` have been found."""
    found = [np.empty((len(bands), 0), ds.dtypes[bands[0] - 1])]
    count = 0
    for window in windows:
        values = _valid_values(ds.read(bands, window=window), ds.read_masks(bands, window=window))
        found.append(values)
        count += values.shape[1]
        if enough is not None and count >= enough:
            break
    return np.concatenate(found, axis=1)


def sample_values(ds: rasterio.DatasetReader, bands: Sequence[int]) -> tuple[np.ndarray, str]:
    """[C, N] valid pixel values from an overview, else from a grid of windows; raises if all is nodata.

    Only when the sample holds no valid pixel are the blocks walked, to tell a sparse raster
    from one that is nodata everywhere.
    """
    bands = list(bands)
    values, source = _overview_values(ds, bands), "overview"
    if values is None:
        values, source = _window_values(ds, bands, _sample_windows(ds.width, ds.height)), "windows"
    if not values.shape[1]:
        blocks = (window for _, window in ds.block_windows(1))
        values, source = _window_values(ds, bands, blocks, enough=SAMPLE_WINDOW * SAMPLE_WINDOW), "blocks"
    if not values.shape[1]:
        raise BadInput(f"{ds.name}: every pixel is nodata")
    return values, source


def compute_stretch(ds: rasterio.DatasetReader, bands: Sequence[int]) -> Stretch:
    """uint8 is divided by 255; other dtypes get a 2-98 % per-band percentile stretch of the valid pixels."""
    bands = list(bands)
    values, source = sample_values(ds, bands)
    if {ds.dtypes[b - 1] for b in bands} == {"uint8"}:
        return Stretch("uint8", (0.0,) * len(bands), (255.0,) * len(bands))
    low, high = np.percentile(values.astype(np.float64), PERCENTILES, axis=1)
    high = np.where(high > low, high, low + 1.0)  # a constant band maps to 0 rather than dividing by zero
    return Stretch(
        "percentile",
        tuple(float(v) for v in low),
        tuple(float(v) for v in high),
        percentiles=PERCENTILES,
        source=source,
    )


class SceneReader:
    """An open scene with a band mapping and a stretch: ``read(window)`` gives model-ready pixels.

    Windows may reach outside the raster; the outside is returned as invalid zeros.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        bands: Sequence[int] | None = None,
        n_inputs: int = 3,
        stretch: Stretch | None = None,
    ) -> None:
        self.info = inspect_raster(path)
        self.bands = (
            check_band_mapping(self.info, bands, n_inputs)
            if bands is not None
            else default_band_mapping(self.info, n_inputs)
        )
        if self.info.crs is None:
            warnings.warn(
                f"{self.info.path}: no CRS; working in pixel space, outputs will not be georeferenced",
                NoCrsWarning,
                stacklevel=2,
            )
        self.dataset = open_raster(path)
        try:
            self.stretch = stretch if stretch is not None else compute_stretch(self.dataset, self.bands)
        except RasterioError as exc:
            self.dataset.close()
            raise BadInput(f"{self.path}: corrupt or truncated raster ({_one_line(exc)})") from exc
        except BaseException:
            self.dataset.close()
            raise

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def crs(self) -> CRS | None:
        return self.info.crs

    @property
    def transform(self) -> Affine:
        return self.info.transform

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 [C, H, W] in [0, 1], valid bool [H, W]); the window may overhang the raster."""
        col, row = int(window.col_off), int(window.row_off)
        width, height = int(window.width), int(window.height)
        image = np.zeros((len(self.bands), height, width), np.float32)
        valid = np.zeros((height, width), bool)
        x0, y0 = max(col, 0), max(row, 0)
        x1, y1 = min(col + width, self.width), min(row + height, self.height)
        if x1 <= x0 or y1 <= y0:
            return image, valid
        inner = Window(x0, y0, x1 - x0, y1 - y0)
        try:
            data = self.dataset.read(self.bands, window=inner)
            masks = self.dataset.read_masks(self.bands, window=inner)
        except RasterioError as exc:
            raise BadInput(f"{self.path}: corrupt or truncated raster ({_one_line(exc)})") from exc
        inside = _valid_mask(data, masks)
        part = self.stretch.apply(data)
        part[:, ~inside] = 0.0
        image[:, y0 - row : y1 - row, x0 - col : x1 - col] = part
        valid[y0 - row : y1 - row, x0 - col : x1 - col] = inside
        return image, valid

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
