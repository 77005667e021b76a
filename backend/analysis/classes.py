"""The classes of a class raster (values, names, colours) and block-by-block reading of it.

A class raster written by ``segment`` keeps its class names as GDAL category names (in the
``.aux.xml`` side-car), its colours as a colour table, and both in a ``CLASSES`` JSON tag. Any of
them is enough; a raster with none of them is refused, since nothing downstream could be named.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from backend.errors import BadInput
from backend.rasters.class_raster import SegClass

BLOCK_PIXELS = 1 << 22  # pixels read at once (a strip of whole rows); tests lower it to exercise streaming
DEFAULT_COLORS = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F"]


@dataclass(frozen=True)
class ClassRaster:
    """What the analyses need to know about a class raster: grid, nodata, classes, pixel area."""

    path: str
    width: int
    height: int
    crs: CRS | None
    transform: Affine
    nodata: int | None
    classes: tuple[SegClass, ...]

    @property
    def values(self) -> list[int]:
        return [c.value for c in self.classes]

    def name_of(self, value: int) -> str:
        return next((c.name for c in self.classes if c.value == value), str(value))

    def by_name(self) -> dict[str, SegClass]:
        return {c.name.casefold(): c for c in self.classes}

    def row_areas_m2(self, row_off: int, height: int) -> np.ndarray:
        """Area in m2 of one pixel of each row ``row_off .. row_off + height`` (rows differ in geographic CRSs)."""
        return pixel_area_m2(self.transform, self.crs, row_off, height, self.path)

    @property
    def area_m2(self) -> float:
        """Area of the whole raster, m2."""
        total = 0.0
        for window in strips(self.width, self.height):
            total += float(self.row_areas_m2(int(window.row_off), int(window.height)).sum()) * self.width
        return total

    def same_grid(self, other: ClassRaster) -> bool:
        return (
            (self.width, self.height) == (other.width, other.height)
            and self.crs == other.crs
            and self.transform.almost_equals(other.transform)
        )


EARTH_RADIUS = 6_371_007.2  # authalic radius, m


def pixel_area_m2(transform: Affine, crs: CRS | None, row_off: int, height: int, name: str = "raster") -> np.ndarray:
    """Pixel area per row in m2: constant in a projected CRS (its linear unit honoured), by latitude in a
    geographic one (on the authalic sphere)."""
    if crs is None:
        raise BadInput(f"{name}: has no CRS, so its pixels have no area in m2")
    if crs.is_geographic:
        rows = np.arange(row_off, row_off + height + 1, dtype=np.float64)
        lat = np.radians(transform.f + transform.e * rows)
        band = np.abs(np.diff(np.sin(lat)))
        return EARTH_RADIUS**2 * math.radians(abs(transform.a)) * band
    unit = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    area = abs(transform.a * transform.e - transform.b * transform.d) * unit**2
    return np.full(height, area, np.float64)


def _names_and_colors(path: str) -> tuple[dict[int, str], dict[int, str], str | None]:
    """Category names and colour-table entries as GDAL sees them (``gdal.Info`` reads the .aux.xml too)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        info = gdal.Info(path, format="json")
    except RuntimeError:
        info = None
    finally:
        gdal.PopErrorHandler()
    if not info:
        return {}, {}, None
    band = info["bands"][0]
    names = {value: name for value, name in enumerate(band.get("categories", [])) if name}
    colors = {}
    table = band.get("colorTable") or {}
    for value, rgba in enumerate(table.get("entries", [])):
        colors[value] = "#{:02X}{:02X}{:02X}".format(*rgba[:3])
    tag = info.get("metadata", {}).get("", {}).get("CLASSES")
    return names, colors, tag


def read_class_raster(path: str | os.PathLike) -> ClassRaster:
    """Open a class raster and read its classes; :class:`BadInput` when it is not one."""
    path = str(path)
    if not Path(path).exists():
        raise BadInput(f"{path}: no such file")
    try:
        with rasterio.open(path) as dataset:
            width, height, crs, transform = dataset.width, dataset.height, dataset.crs, dataset.transform
            dtype, nodata, count = dataset.dtypes[0], dataset.nodata, dataset.count
    except rasterio.RasterioIOError as exc:
        raise BadInput(f"{path}: not a raster GDAL can read") from exc
    if count != 1 or not np.issubdtype(np.dtype(dtype), np.integer):
        raise BadInput(f"{path}: not a class raster (needs one integer band, has {count} band(s) of {dtype})")
    names, colors, tag = _names_and_colors(path)
    classes: dict[int, SegClass] = {}
    if tag:
        try:
            for item in json.loads(tag):
                value = int(item["value"])
                classes[value] = SegClass(value, str(item["name"]), str(item.get("color", "#808080")).upper())
        except (ValueError, KeyError, TypeError):
            classes = {}
    for value, name in names.items():
        if value == nodata:
            continue
        color = colors.get(value) or (classes[value].color if value in classes else None)
        classes[value] = SegClass(value, name, color or DEFAULT_COLORS[value % len(DEFAULT_COLORS)])
    if not classes:
        raise BadInput(
            f"{path}: has no class names (neither category names nor a CLASSES tag); "
            "write it with `crossearth segment` or give it a colour table with category names"
        )
    nodata_value = int(nodata) if nodata is not None and float(nodata).is_integer() else None
    if nodata_value is not None:
        classes.pop(nodata_value, None)
    ordered = tuple(classes[value] for value in sorted(classes))
    return ClassRaster(path, width, height, crs, transform, nodata_value, ordered)


def strips(width: int, height: int, block_pixels: int | None = None) -> Iterator[Window]:
    """Windows of whole rows, as many rows as fit in ``block_pixels`` (at least one)."""
    rows = max(1, (block_pixels or BLOCK_PIXELS) // max(width, 1))
    for row in range(0, height, rows):
        yield Window(0, row, width, min(rows, height - row))


def read_strips(raster: ClassRaster) -> Iterator[tuple[Window, np.ndarray]]:
    """The class raster strip by strip, as int32 arrays (nodata kept as its value)."""
    with rasterio.open(raster.path) as dataset:
        for window in strips(raster.width, raster.height):
            yield window, dataset.read(1, window=window).astype(np.int32)


def valid_mask(raster: ClassRaster, data: np.ndarray) -> np.ndarray:
    """True where a pixel holds one of the raster's classes (not nodata, not an unnamed value)."""
    return np.isin(data, raster.values) & (data != (raster.nodata if raster.nodata is not None else -1))


class ValueIndex:
    """Maps pixel values to class indices 0..K-1 (-1 for nodata and values that are no class), cheaply:
    one table look-up (int16) for byte and 16-bit rasters, a masked one for anything else."""

    def __init__(self, values_to_index: dict[int, int], nodata: int | None = None) -> None:
        self.mapping = {v: i for v, i in values_to_index.items() if v != nodata}
        top = max([*self.mapping, 255]) + 1
        self.table = np.full(max(top, 256), -1, np.int16)
        for value, index in self.mapping.items():
            if value >= 0:
                self.table[value] = index

    @classmethod
    def of(cls, raster: ClassRaster) -> ValueIndex:
        return cls({c.value: k for k, c in enumerate(raster.classes)}, raster.nodata)

    def __call__(self, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data)
        if data.dtype == np.uint8 or (data.dtype.kind == "u" and data.size and int(data.max()) < len(self.table)):
            return self.table[data]
        inside = (data >= 0) & (data < len(self.table))
        return np.where(inside, self.table[np.where(inside, data, 0)], np.int16(-1))


def add_counts(
    index: np.ndarray, row_areas: np.ndarray, slots: int, pixels: np.ndarray, m2: np.ndarray, inside=None
) -> None:
    """Add the pixel counts and areas (m2) of ``index`` (values 0..slots-1; others ignored) row by row."""
    if inside is not None:
        index = np.where(inside, index, -1)
    if np.all(row_areas == row_areas[0]):  # a projected CRS: every pixel has the same area
        counts = np.bincount(index[index >= 0].ravel().astype(np.intp), minlength=slots)[:slots]
        pixels += counts
        m2 += counts * float(row_areas[0])
        return
    for slot in range(slots):
        per_row = (index == slot).sum(axis=1)
        pixels[slot] += int(per_row.sum())
        m2[slot] += float(per_row @ row_areas)
