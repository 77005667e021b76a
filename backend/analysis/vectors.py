"""Reading vector files for the analyses: features with one attribute, reprojected to a raster's CRS."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.warp import transform_geom

from backend.errors import BadInput


@dataclass(frozen=True)
class Feature:
    geometry: dict[str, Any]  # GeoJSON in the raster's CRS
    value: Any  # the attribute (None when unset or no field was asked for)


@dataclass(frozen=True)
class VectorLayer:
    path: str
    features: list[Feature]
    kind: str  # "point" or "polygon"
    metadata: dict[str, str]


def open_vector(path: str | os.PathLike):
    from osgeo import gdal, ogr

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        source = ogr.Open(str(path))
    except RuntimeError:
        source = None
    finally:
        gdal.PopErrorHandler()
    if source is None or source.GetLayerCount() == 0:
        raise BadInput(f"{path}: not a vector file OGR can read")
    return source


def read_features(path: str | os.PathLike, crs: CRS | None, field: str | None) -> VectorLayer:
    """The first layer's points or polygons (multi-parts kept), reprojected to ``crs``, with ``field``'s values."""
    from osgeo import ogr

    source = open_vector(path)
    layer = source.GetLayer(0)
    definition = layer.GetLayerDefn()
    fields = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if field is not None and field not in fields:
        raise BadInput(f"{path}: has no field {field!r} (its fields: {', '.join(fields) or 'none'})")
    srs = layer.GetSpatialRef()
    layer_crs = CRS.from_wkt(srs.ExportToWkt()) if srs is not None else None
    reproject = layer_crs is not None and crs is not None and layer_crs != crs
    features: list[Feature] = []
    kinds: set[str] = set()
    for feature in layer:
        geom = feature.GetGeometryRef()
        if geom is None:
            continue
        flat = ogr.GT_Flatten(geom.GetGeometryType())
        if flat in (ogr.wkbPoint, ogr.wkbMultiPoint):
            kinds.add("point")
        elif flat in (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
            kinds.add("polygon")
            if flat in (ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
                geom = geom.GetLinearGeometry()
        else:
            continue
        geom = geom.Clone()
        geom.FlattenTo2D()
        shape = json.loads(geom.ExportToJson())
        if reproject:
            shape = transform_geom(layer_crs, crs, shape)
        value = feature.GetField(field) if field is not None and feature.IsFieldSet(field) else None
        features.append(Feature(shape, value))
    if not features:
        raise BadInput(f"{path}: has no points or polygons")
    if len(kinds) > 1:
        raise BadInput(f"{path}: mixes points and polygons; give one kind of reference")
    metadata = layer.GetMetadata() or {}
    return VectorLayer(str(path), features, kinds.pop(), dict(metadata))
