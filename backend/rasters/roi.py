"""The part of a raster to segment: a pixel window, optionally narrowed to polygons.

A bbox may be given in any CRS and a polygon file in any CRS; both are brought to the
raster's CRS so that the window and the mask are in the raster's own pixels.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import bounds, geometry_mask
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window, from_bounds
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from backend.errors import BadInput

BBox = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax
MAX_CHECKED_PIXELS = 1 << 24  # polygon ROIs up to this many pixels are checked to cover at least one


class RasterLike(Protocol):
    """RasterInfo, SceneReader and rasterio datasets all qualify."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None


@dataclass(frozen=True)
class Roi:
    """A window of the raster (clipped to it) and, for a polygon ROI, the polygons in raster CRS."""

    window: Window
    transform: Affine  # the raster's transform: windows given to ``mask`` are in its pixels
    shapes: tuple[dict[str, Any], ...] = ()

    def mask(self, window: Window) -> np.ndarray:
        """bool [H, W] for a raster window: True where the pixel centre is inside the ROI."""
        height, width = int(window.height), int(window.width)
        if self.shapes:
            inside = geometry_mask(
                self.shapes,
                out_shape=(height, width),
                transform=window_transform(window, self.transform),
                invert=True,
            )
        else:
            inside = np.ones((height, width), bool)
        col, row = int(window.col_off), int(window.row_off)
        ys = np.arange(row, row + height)
        xs = np.arange(col, col + width)
        r0, c0 = int(self.window.row_off), int(self.window.col_off)
        in_rows = (ys >= r0) & (ys < r0 + int(self.window.height))
        in_cols = (xs >= c0) & (xs < c0 + int(self.window.width))
        return inside & in_rows[:, None] & in_cols[None, :]


def _name(raster: RasterLike) -> str:
    return str(getattr(raster, "path", None) or getattr(raster, "name", "raster"))


def whole_raster(raster: RasterLike) -> Roi:
    return Roi(Window(0, 0, raster.width, raster.height), raster.transform)


def _to_crs(value: str | CRS, what: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except (CRSError, ValueError) as exc:
        raise BadInput(f"{what} {value!r}: not a CRS ({exc})") from exc


def _pixel_window(raster: RasterLike, bounds: BBox) -> Window:
    """Smallest whole-pixel window holding ``bounds`` (raster CRS), clipped to the raster; None if outside."""
    xmin, ymin, xmax, ymax = bounds
    win = from_bounds(xmin, ymin, xmax, ymax, transform=raster.transform)
    eps = 1e-6  # a bound lying on a pixel edge must not pull in the neighbouring pixel
    col0 = max(math.floor(win.col_off + eps), 0)
    row0 = max(math.floor(win.row_off + eps), 0)
    col1 = min(math.ceil(win.col_off + win.width - eps), raster.width)
    row1 = min(math.ceil(win.row_off + win.height - eps), raster.height)
    if col1 <= col0 or row1 <= row0:
        raise BadInput(f"{_name(raster)}: the ROI {bounds} lies outside the raster {raster_bounds(raster)}")
    return Window(col0, row0, col1 - col0, row1 - row0)


def raster_bounds(raster: RasterLike) -> BBox:
    left, bottom, right, top = window_bounds(Window(0, 0, raster.width, raster.height), raster.transform)
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def _intersect(a: Window, b: Window, name: str) -> Window:
    col0, row0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    col1 = min(a.col_off + a.width, b.col_off + b.width)
    row1 = min(a.row_off + a.height, b.row_off + b.height)
    if col1 <= col0 or row1 <= row0:
        raise BadInput(f"{name}: the bbox and the polygons of the ROI do not overlap")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _polygon_parts(geom: Any) -> list[Any]:
    """Polygons of an OGR geometry (curves linearised, collections opened); other types give none."""
    from osgeo import ogr

    kind = ogr.GT_Flatten(geom.GetGeometryType())
    if kind in (ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
        return _polygon_parts(geom.GetLinearGeometry())
    if kind in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
        flat = geom.Clone()
        flat.FlattenTo2D()
        return [flat]
    if kind == ogr.wkbGeometryCollection:
        return [p for i in range(geom.GetGeometryCount()) for p in _polygon_parts(geom.GetGeometryRef(i))]
    return []


def read_polygons(path: str | os.PathLike, crs: CRS | None) -> list[dict[str, Any]]:
    """Every polygon of every layer of a vector file, as GeoJSON reprojected to ``crs``."""
    from osgeo import gdal, ogr

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        source = ogr.Open(str(path))
        error = gdal.GetLastErrorMsg()
    except RuntimeError as exc:  # when some other code has called ogr.UseExceptions()
        source, error = None, str(exc)
    finally:
        gdal.PopErrorHandler()
    if source is None:
        raise BadInput(f"{path}: not a vector file OGR can read{f' ({error})' if error else ''}")
    shapes: list[dict[str, Any]] = []
    for layer in source:
        srs = layer.GetSpatialRef()
        layer_crs = CRS.from_wkt(srs.ExportToWkt()) if srs is not None else None
        if layer_crs is not None and crs is None:
            warnings.warn(
                f"{path}: the raster has no CRS; using the polygons' coordinates as they are",
                UserWarning,
                stacklevel=3,
            )
        reproject = layer_crs is not None and crs is not None and layer_crs != crs
        for feature in layer:
            geom = feature.GetGeometryRef()
            for part in _polygon_parts(geom) if geom is not None else []:
                shape = json.loads(part.ExportToJson())
                shapes.append(transform_geom(layer_crs, crs, shape) if reproject else shape)
    if not shapes:
        raise BadInput(f"{path}: has no polygons")
    return shapes


def _shapes_bounds(shapes: list[dict[str, Any]]) -> BBox:
    """The box holding every shape (GeoJSON geometries)."""
    boxes = [bounds(shape) for shape in shapes]
    return (
        min(box[0] for box in boxes),
        min(box[1] for box in boxes),
        max(box[2] for box in boxes),
        max(box[3] for box in boxes),
    )


def resolve_roi(
    raster: RasterLike,
    bbox: BBox | None = None,
    bbox_crs: str | CRS | None = None,
    vector_path: str | os.PathLike | None = None,
) -> Roi:
    """The ROI in the raster's pixels; neither bbox nor vector means the whole raster.

    ``bbox_crs`` defaults to the raster's CRS. With both, the ROI is the polygons within the bbox.
    """
    name = _name(raster)
    window = Window(0, 0, raster.width, raster.height)
    if bbox is not None:
        xmin, ymin, xmax, ymax = bbox
        if not (xmin < xmax and ymin < ymax):
            raise BadInput(f"{name}: empty ROI bbox {bbox} (need xmin < xmax and ymin < ymax)")
        if bbox_crs is not None:
            if raster.crs is None:
                raise BadInput(f"{name}: has no CRS, so a bbox in {bbox_crs} cannot be placed on it")
            source_crs = _to_crs(bbox_crs, "bbox CRS")
            if source_crs != raster.crs:
                bbox = transform_bounds(source_crs, raster.crs, xmin, ymin, xmax, ymax, densify_pts=21)
                if not all(math.isfinite(value) for value in bbox):
                    raise BadInput(f"{name}: ROI bbox {(xmin, ymin, xmax, ymax)} is not a valid extent in {source_crs}")
        window = _pixel_window(raster, bbox)
    shapes: list[dict[str, Any]] = []
    if vector_path is not None:
        shapes = read_polygons(vector_path, raster.crs)
        window = _intersect(window, _pixel_window(raster, _shapes_bounds(shapes)), name)
    roi = Roi(window, raster.transform, tuple(shapes))
    if shapes and window.width * window.height <= MAX_CHECKED_PIXELS and not roi.mask(window).any():
        raise BadInput(f"{vector_path}: the polygons cover no pixel centre of {name}")
    return roi
