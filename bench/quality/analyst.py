"""A simulated analyst: K small polygons drawn inside ground-truth regions of a scene, as a GeoPackage.

Each polygon is a disk wholly inside one class (its centre at least the radius from any other class or an
unlabelled pixel); the radius makes the K disks cover about ``COVER`` of the image, as an analyst's quick
polygons would. ``placement`` "area" picks each disk's class in proportion to the classes' areas (what an
analyst clicking around a scene does), "classes" goes round the classes present, so each gets its share.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from affine import Affine
from scipy.ndimage import distance_transform_edt

from backend.analysis.metrics import IGNORE_INDEX

COVER = 0.008  # share of the image the K polygons cover together
MIN_RADIUS = 4  # pixels: a class with no room for a disk this size gets none


def draw_disks(labels: np.ndarray, count: int, placement: str, seed: int) -> list[tuple[int, int, float, int]]:
    """(row, col, radius in pixels, class) of ``count`` disks inside ground-truth regions of ``labels``."""
    if placement not in ("area", "classes"):
        raise ValueError(f"placement must be 'area' or 'classes', got {placement!r}")
    rng = np.random.default_rng(seed)
    radius = max(MIN_RADIUS, math.sqrt(COVER * labels.size / (count * math.pi)))
    present = [int(c) for c in np.unique(labels) if c != IGNORE_INDEX]
    room = {c: distance_transform_edt(labels == c) for c in present}  # distance to the nearest other pixel
    areas = np.array([(labels == c).sum() for c in present], dtype=float)
    disks: list[tuple[int, int, float, int]] = []
    taken = np.zeros(labels.shape, bool)
    for index in range(count):
        if placement == "area":
            order = list(rng.choice(present, size=len(present), replace=False, p=areas / areas.sum()))
        else:
            order = present[index % len(present) :] + present[: index % len(present)]
        for label in order:
            for size in (radius, radius / 2, MIN_RADIUS):
                rows, cols = np.nonzero((room[label] > size + 1) & ~taken)
                if len(rows):
                    pick = int(rng.integers(len(rows)))
                    row, col = int(rows[pick]), int(cols[pick])
                    disks.append((row, col, float(size), label))
                    yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1]]
                    taken |= (yy - row) ** 2 + (xx - col) ** 2 <= (2 * size) ** 2  # no two disks overlap
                    break
            else:
                continue
            break
    return disks


def write_disks(
    disks: list[tuple[int, int, float, int]], classes: list[dict], transform: Affine, crs_wkt: str, path: Path
) -> Path:
    """The disks as polygons in the scene's CRS, with the class name in field ``class``."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs_wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    names = {c["value"]: c["name"] for c in classes}
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("analyst", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTString))
    for row, col, radius, label in disks:
        x, y = transform * (col + 0.5, row + 0.5)
        centre = ogr.CreateGeometryFromWkt(f"POINT ({x!r} {y!r})")
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(centre.Buffer(radius * abs(transform.a), 16))
        feature.SetField("class", names[label])
        layer.CreateFeature(feature)
    feature = layer = None  # OGR's objects must go before their file
    source = None
    return path
