"""An analyst's labels as a vector file: polygons (points and lines buffered) with a class field.

The shapes are read with OGR in any CRS, brought to the scene's CRS, and burnt into each adaptation tile
with rasterio; pixels no shape covers stay ``IGNORE_INDEX``. The class field holds the model's class names
(any case) or class values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from backend.analysis.metrics import IGNORE_INDEX
from backend.analysis.vectors import open_vector
from backend.contract import DEFAULT_LABEL_BUFFER_M, DEFAULT_LABEL_FIELD
from backend.errors import BadInput
from backend.rasters.roi import RasterLike, raster_bounds

HOLD_OUT_EVERY = 3  # LabelShapes.split: a third of each class's shapes estimate how well adaptation did
MIN_HELD_OUT = 4  # fewer held-out shapes than this: the estimate comes from HOLD_OUT_EVERY folds instead
MAX_BURNT_PIXELS = 1 << 22  # a shape whose box is larger is taken to cover the scene without burning it


@dataclass(frozen=True)
class LabelShapes:
    """Labelled shapes in the scene's CRS: GeoJSON geometries and their class values."""

    path: str
    shapes: tuple[tuple[dict[str, Any], int], ...]
    transform: Affine  # the scene's

    def burn(self, window: Window) -> np.ndarray:
        """int64 ``[H, W]`` class values of a scene window, ``IGNORE_INDEX`` where no shape covers a pixel centre."""
        return rasterize(
            self.shapes,
            out_shape=(int(window.height), int(window.width)),
            transform=window_transform(window, self.transform),
            fill=IGNORE_INDEX,
            dtype="int64",
        )

    def split(self, every: int = HOLD_OUT_EVERY) -> tuple[LabelShapes, LabelShapes]:
        """(training, held-out) shapes: of each class with at least two shapes, every ``every``-th (at least one)
        is held out to estimate the result honestly; split by shape, so no held-out pixel is next to a trained one."""
        train, held_out = [], []
        for value in sorted({value for _, value in self.shapes}):
            of_class = [item for item in self.shapes if item[1] == value]
            out = set(range(every - 1, len(of_class), every)) or ({len(of_class) - 1} if len(of_class) > 1 else set())
            for index, item in enumerate(of_class):
                (held_out if index in out else train).append(item)
        return replace(self, shapes=tuple(train)), replace(self, shapes=tuple(held_out))

    def folds(self, count: int = HOLD_OUT_EVERY) -> list[tuple[LabelShapes, LabelShapes]]:
        """(training, held-out) shapes of ``count`` folds in which every shape is held out once: the shapes, class by
        class, are dealt round the folds, so each fold holds out some of every class that has enough shapes."""
        ordered = sorted(self.shapes, key=lambda item: item[1])
        dealt = [index % count for index in range(len(ordered))]
        return [
            (
                replace(self, shapes=tuple(item for item, f in zip(ordered, dealt, strict=True) if f != fold)),
                replace(self, shapes=tuple(item for item, f in zip(ordered, dealt, strict=True) if f == fold)),
            )
            for fold in range(min(count, len(ordered)))
        ]

    def pixel_windows(self, size: int, width: int, height: int) -> list[Window]:
        """One ``size`` window (inside the scene) centred on each shape, so every labelled shape is trained on."""
        windows = []
        inverse = ~self.transform
        for shape, _ in self.shapes:
            xs, ys = zip(*_points(shape["coordinates"]), strict=True)
            cols, rows = zip(*(inverse * (x, y) for x, y in zip(xs, ys, strict=True)), strict=True)
            centre_col, centre_row = (min(cols) + max(cols)) / 2, (min(rows) + max(rows)) / 2
            col = int(np.clip(round(centre_col - size / 2), 0, max(width - size, 0)))
            row = int(np.clip(round(centre_row - size / 2), 0, max(height - size, 0)))
            windows.append(Window(col, row, min(size, width), min(size, height)))
        return windows


def is_vector(path: str | os.PathLike) -> bool:
    """True for a file OGR reads as vectors and GDAL not as a raster (a GeoPackage may hold both: then raster)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_RASTER)
    except RuntimeError:
        dataset = None
    finally:
        gdal.PopErrorHandler()
    return dataset is not None and dataset.RasterCount == 0 and dataset.GetLayerCount() > 0


def read_label_shapes(
    path: str | os.PathLike,
    raster: RasterLike,
    classes: list[dict],
    field: str = DEFAULT_LABEL_FIELD,
    buffer_m: float = DEFAULT_LABEL_BUFFER_M,
    within: Window | None = None,
) -> LabelShapes:
    """The labelled shapes of every layer of ``path``, at least one over ``within`` (a window of ``raster``, by
    default all of it); bad input raises :class:`BadInput`."""
    from osgeo import osr

    path = Path(path)
    if buffer_m <= 0:
        raise BadInput(f"{path}: the label buffer must be a positive number of metres, got {buffer_m}")
    source = open_vector(path)
    target = osr.SpatialReference()
    if raster.crs is not None:
        target.ImportFromWkt(raster.crs.to_wkt())
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        shapes = _read_shapes(source, path, target if raster.crs is not None else None, classes, field, buffer_m)
    finally:
        source = None  # after every layer and feature of it: OGR's objects die with their file
    if not shapes:
        raise BadInput(f"{path}: has no labelled shapes")
    labels = LabelShapes(str(path), tuple(shapes), raster.transform)
    _check_covers(labels, raster, within or Window(0, 0, raster.width, raster.height))
    return labels


def _read_shapes(source: Any, path: Path, target: Any, classes: list[dict], field: str, buffer_m: float) -> list:
    """(GeoJSON in ``target``'s CRS, class value) of every feature of every layer of the open OGR ``source``."""
    from osgeo import ogr, osr

    value_of = _class_lookup(classes)
    shapes = []
    layer = feature = geometry = None
    try:
        for layer in source:
            definition = layer.GetLayerDefn()
            names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
            match = next((name for name in names if name.lower() == field.lower()), None)
            if match is None:
                raise BadInput(
                    f"{path}: no field {field!r} (fields: {', '.join(names) or 'none'}); choose one with --label-field"
                )
            source_srs = layer.GetSpatialRef()
            if source_srs is not None:
                source_srs = source_srs.Clone()
                source_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            to_scene = (
                osr.CoordinateTransformation(source_srs, target)
                if source_srs is not None and target is not None and not source_srs.IsSame(target)
                else None
            )
            for feature in layer:
                geometry = feature.GetGeometryRef()
                if geometry is None or geometry.IsEmpty():
                    continue
                value = value_of(feature.GetField(match), path, feature.GetFID())
                geometry = geometry.Clone()
                kind = ogr.GT_Flatten(geometry.GetGeometryType())
                if kind not in (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
                    geometry = _buffered(geometry, buffer_m, source_srs)
                if to_scene is not None:
                    geometry.Transform(to_scene)
                geometry.FlattenTo2D()
                shapes.append((json.loads(geometry.GetLinearGeometry().ExportToJson()), value))
    finally:
        geometry = feature = layer = definition = None  # released before the caller closes the file
    return shapes


def _class_lookup(classes: list[dict]):
    by_name = {c["name"].lower(): int(c["value"]) for c in classes}
    values = {int(c["value"]) for c in classes}
    listing = ", ".join(f"{c['value']} {c['name']}" for c in classes)

    def value_of(raw: Any, path: Path, fid: int) -> int:
        text = str(raw).strip() if raw is not None else ""
        if text.lower() in by_name:
            return by_name[text.lower()]
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number.is_integer() and int(number) in values:
            return int(number)
        raise BadInput(f"{path}: feature {fid} has class {text!r}, which the model lacks (its classes: {listing})")

    return value_of


def _buffered(geometry: Any, metres: float, srs: Any) -> Any:
    """Points and lines buffered by ``metres``: in a local equidistant projection when the CRS is geographic."""
    from osgeo import osr

    if srs is None or not srs.IsGeographic():
        return geometry.Buffer(metres)
    centroid = geometry.Centroid()
    local = osr.SpatialReference()
    local.SetAE(centroid.GetY(), centroid.GetX(), 0, 0)  # azimuthal equidistant at the shape, in metres
    local.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geometry.Transform(osr.CoordinateTransformation(srs, local))
    buffered = geometry.Buffer(metres)
    buffered.Transform(osr.CoordinateTransformation(local, srs))
    return buffered


def _check_covers(labels: LabelShapes, raster: RasterLike, within: Window) -> None:
    """At least one shape must cover a pixel centre of ``within``."""
    inverse = ~raster.transform
    c0, r0 = int(within.col_off), int(within.row_off)
    c1, r1 = c0 + int(within.width), r0 + int(within.height)
    for shape, _ in labels.shapes:
        corners = [inverse * point for point in _points(shape["coordinates"])]
        col0 = max(int(np.floor(min(c for c, _ in corners))), c0)
        row0 = max(int(np.floor(min(r for _, r in corners))), r0)
        col1 = min(int(np.ceil(max(c for c, _ in corners))), c1)
        row1 = min(int(np.ceil(max(r for _, r in corners))), r1)
        if col1 <= col0 or row1 <= row0:
            continue
        if (col1 - col0) * (row1 - row0) > MAX_BURNT_PIXELS:  # too large to burn for a check: it surely covers
            return
        window = Window(col0, row0, col1 - col0, row1 - row0)
        if (LabelShapes(labels.path, ((shape, 0),), labels.transform).burn(window) != IGNORE_INDEX).any():
            return
    where = "region of interest" if (c0, r0, c1, r1) != (0, 0, raster.width, raster.height) else "scene"
    raise BadInput(f"{labels.path}: no labelled shape covers a pixel of the {where} {raster_bounds(raster)}")


def _points(coordinates: Any) -> list[tuple[float, float]]:
    if isinstance(coordinates[0], (int, float)):
        return [(float(coordinates[0]), float(coordinates[1]))]
    return [point for part in coordinates for point in _points(part)]
