"""Write segmentation outputs (classes, confidence, entropy) as tiled GeoTIFFs, strip by strip.

The class raster carries its colour table and class names (GDAL category names and a raster
attribute table) so that QGIS and ``gdalinfo`` show them; every output is written beside its
target and renamed only when complete.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from backend import __version__
from backend.errors import BadInput
from backend.rasters.atomic import atomic_output

CLASS_NODATA = 255
BLOCK = 512
OVERVIEW_MIN_SIZE = 256  # overviews are added until the smallest is at most this many pixels across

_GTIFF = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": BLOCK,
    "blockysize": BLOCK,
    "compress": "deflate",
    "bigtiff": "IF_SAFER",
}


@dataclass(frozen=True)
class SegClass:
    """One output class: its pixel value, name and display colour."""

    value: int
    name: str
    color: str  # "#RRGGBB"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "color": self.color}


def parse_classes(classes: Sequence[Mapping[str, Any] | SegClass]) -> list[SegClass]:
    """Check a class list ({"value", "name", "color"} dicts); values 0..254 since 255 is nodata."""
    parsed: list[SegClass] = []
    for item in classes:
        if isinstance(item, SegClass):
            parsed.append(item)
            continue
        try:
            value, name, color = int(item["value"]), str(item["name"]), str(item["color"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"classes: {item!r} needs an integer value, a name and a color") from exc
        if not re.fullmatch(r"#[0-9A-Fa-f]{6}", color):
            raise BadInput(f"classes: colour {color!r} of {name!r} is not #RRGGBB")
        parsed.append(SegClass(value, name, color.upper()))
    if not parsed:
        raise BadInput("classes: the class list is empty")
    values = [c.value for c in parsed]
    if len(set(values)) != len(values):
        raise BadInput(f"classes: values repeat in {values}")
    if not all(0 <= v < CLASS_NODATA for v in values):
        raise BadInput(f"classes: values must lie in 0..254 (255 marks nodata), got {values}")
    return parsed


def overview_factors(width: int, height: int) -> list[int]:
    """Powers of two until the coarsest overview is at most OVERVIEW_MIN_SIZE pixels across."""
    factors: list[int] = []
    while math.ceil(max(width, height) / 2 ** len(factors)) > OVERVIEW_MIN_SIZE:
        factors.append(2 ** (len(factors) + 1))
    return factors


@contextmanager
def atomic_raster(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """``atomic_output`` that also moves GDAL's ``.aux.xml`` side-car (class names live there)."""
    target = Path(path)
    side_car = target.with_name(target.name + ".aux.xml")
    with atomic_output(target, overwrite) as tmp:
        yield tmp
        tmp_side_car = tmp.with_name(tmp.name + ".aux.xml")
        if tmp_side_car.exists():
            os.replace(tmp_side_car, side_car)
        else:
            side_car.unlink(missing_ok=True)  # a stale one would describe the raster being replaced


def _write_class_names(path: Path, classes: Sequence[SegClass]) -> None:
    """Category names and a Value/Class/Red/Green/Blue attribute table, which rasterio cannot write."""
    from osgeo import gdal

    dataset = gdal.Open(str(path), gdal.GA_Update)
    band = dataset.GetRasterBand(1)
    names = [""] * CLASS_NODATA
    for c in classes:
        names[c.value] = c.name
    band.SetCategoryNames(names[: max(c.value for c in classes) + 1])
    table = gdal.RasterAttributeTable()
    table.SetTableType(gdal.GRTT_THEMATIC)
    columns = [
        ("Value", gdal.GFT_Integer, gdal.GFU_MinMax),
        ("Class", gdal.GFT_String, gdal.GFU_Name),
        ("Red", gdal.GFT_Integer, gdal.GFU_Red),
        ("Green", gdal.GFT_Integer, gdal.GFU_Green),
        ("Blue", gdal.GFT_Integer, gdal.GFU_Blue),
    ]
    for name, kind, usage in columns:
        table.CreateColumn(name, kind, usage)
    table.SetRowCount(len(classes))
    for row, c in enumerate(sorted(classes, key=lambda c: c.value)):
        table.SetValueAsInt(row, 0, c.value)
        table.SetValueAsString(row, 1, c.name)
        for col, level in enumerate(c.rgb, start=2):
            table.SetValueAsInt(row, col, level)
    band.SetDefaultRAT(table)
    dataset = None  # closing writes the .aux.xml


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


_PROFILES: dict[str, dict[str, Any]] = {
    "class": {"dtype": "uint8", "nodata": CLASS_NODATA},
    "confidence": {"dtype": "float32", "nodata": math.nan, "predictor": 3},
    "entropy": {"dtype": "float32", "nodata": math.nan, "predictor": 3},
}
_DESCRIPTIONS = {
    "class": "class",
    "confidence": "confidence: highest class probability",
    "entropy": "entropy of the class probabilities / log(number of classes), 0..1",
}


class _Output:
    """One single-band output, fed whole block rows of a band of columns, so that no compressed tile is
    written twice: columns begin at a multiple of the block size (or span the raster)."""

    def __init__(self, path: Path, profile: dict[str, Any]) -> None:
        self.path = path
        self.nodata, self.dtype = profile["nodata"], profile["dtype"]
        self.dataset = rasterio.open(path, "w", **profile)
        self.col_off = 0
        self.buffer = np.empty((0, 0), self.dtype)  # sized by begin_columns
        self.buffered = 0  # rows held in the buffer
        self.written = 0  # rows of the current columns already in the file
        self.pixels = 0  # pixels written in all

    def begin_columns(self, col_off: int, width: int) -> None:
        self.flush()
        self.col_off, self.written = col_off, 0
        self.buffer = np.full((BLOCK, width), self.nodata, self.dtype)

    def add(self, rows: np.ndarray) -> None:
        start = 0
        while start < rows.shape[0]:
            take = min(BLOCK - self.buffered, rows.shape[0] - start)
            self.buffer[self.buffered : self.buffered + take] = rows[start : start + take]
            self.buffered += take
            start += take
            if self.buffered == BLOCK:
                self.flush()

    def flush(self) -> None:
        if self.buffered:
            window = Window(self.col_off, self.written, self.buffer.shape[1], self.buffered)
            self.dataset.write(self.buffer[: self.buffered], 1, window=window)
            self.written += self.buffered
            self.pixels += self.buffered * self.buffer.shape[1]
            self.buffered = 0

    def close(self) -> None:
        self.dataset.close()


class SegmentationWriter:
    """Context manager writing the class raster and optional confidence/entropy rasters row by row.

    Rows must come in order from the top, for the whole width or one band of columns
    (:meth:`begin_columns`) at a time. On a clean exit the overviews and class names are added
    and every output appears at once; on an error or a cancel none does and no temporary file stays.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        crs: CRS | None,
        transform: Affine,
        classes: Sequence[SegClass],
        confidence: str | os.PathLike | None = None,
        entropy: str | os.PathLike | None = None,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.width, self.height = width, height
        self.classes = list(classes)
        self.paths = {"class": Path(path)}
        if confidence is not None:
            self.paths["confidence"] = Path(confidence)
        if entropy is not None:
            self.paths["entropy"] = Path(entropy)
        if len({p.resolve() for p in self.paths.values()}) != len(self.paths):
            raise BadInput(f"{path}: the class, confidence and entropy outputs must be different files")
        self.overwrite = overwrite
        self.tags = {
            "SOFTWARE": f"crossearth-qgis {__version__}",
            "CLASSES": json.dumps([c.to_dict() for c in self.classes]),
            **{key: _tag_value(value) for key, value in (metadata or {}).items()},
        }
        self._base = {"width": width, "height": height, "count": 1, "crs": crs, "transform": transform}
        self._stack = ExitStack()
        self._outputs: dict[str, _Output] = {}

    def __enter__(self) -> SegmentationWriter:
        with ExitStack() as stack:
            for key, path in self.paths.items():
                tmp = stack.enter_context(atomic_raster(path, self.overwrite))
                output = _Output(tmp, {**_GTIFF, **self._base, **_PROFILES[key]})
                output.begin_columns(0, self.width)
                stack.callback(output.close)
                self._describe(key, output.dataset)
                self._outputs[key] = output
            self._stack = stack.pop_all()
        return self

    def _describe(self, key: str, dataset: rasterio.io.DatasetWriter) -> None:
        """Tags, band description and colour table, set before any pixel (libtiff refuses a palette later)."""
        dataset.update_tags(**self.tags)
        dataset.set_band_description(1, _DESCRIPTIONS[key])
        if key == "class":
            colormap = {c.value: (*c.rgb, 255) for c in self.classes}
            colormap[CLASS_NODATA] = (0, 0, 0, 0)
            dataset.write_colormap(1, colormap)

    def begin_columns(self, col_off: int, width: int) -> None:
        """Write the next rows into columns ``col_off:col_off + width``, from the top again.

        ``col_off`` must be a multiple of the block size; the raster's full width is the default.
        """
        if col_off % BLOCK or not 0 < width <= self.width - col_off:
            raise ValueError(f"columns {col_off}:{col_off + width} do not start a block of the {self.width} px width")
        for output in self._outputs.values():
            output.begin_columns(col_off, width)

    def write_rows(
        self,
        classes: np.ndarray,
        confidence: np.ndarray | None = None,
        entropy: np.ndarray | None = None,
    ) -> None:
        """Append the next rows of the current columns: uint8 class values (255 = nodata) and float32 maps
        (NaN = nodata)."""
        rows = {"class": classes, "confidence": confidence, "entropy": entropy}
        for key, output in self._outputs.items():
            data = rows[key]
            if data is None:
                raise ValueError(f"{output.path}: rows for the {key} output are missing")
            output.add(data)

    def _finish(self) -> None:
        for key, output in self._outputs.items():
            output.flush()
            if output.pixels != self.width * self.height:
                raise RuntimeError(f"{output.path}: {output.pixels} of {self.width * self.height} pixels were written")
            output.close()
            factors = overview_factors(self.width, self.height)
            if factors:
                resampling = Resampling.mode if key == "class" else Resampling.average
                with (
                    rasterio.Env(COMPRESS_OVERVIEW="DEFLATE", GDAL_TIFF_OVR_BLOCKSIZE=str(BLOCK)),
                    rasterio.open(output.path, "r+") as dataset,
                ):
                    dataset.build_overviews(factors, resampling)
                    dataset.update_tags(ns="rio_overview", resampling=resampling.name)
            if key == "class":
                _write_class_names(output.path, self.classes)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is not None:
            self._stack.__exit__(exc_type, exc, tb)
            return
        with self._stack:
            self._finish()
