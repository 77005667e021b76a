"""Where to label next: small boxes where the model is least sure, spread over the scene and its classes.

The scene is segmented (class and confidence rasters, in a temporary folder), both are read back at the
resolution of one value per box (mean confidence, the box's majority class), and boxes are picked greedily:
most uncertain first, each at least ``spacing`` boxes from every box already picked, going round the
predicted classes so that a class covering little of the scene still gets its share.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from backend.contract import DEFAULT_SPOT_PIXELS, DEFAULT_SUGGESTED_SPOTS, Scene, SegmentOptions
from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, never_cancelled, no_progress, sub_progress
from backend.rasters.atomic import atomic_output, check_writable


@dataclass(frozen=True)
class Spot:
    """A box of the scene to label: its rank, pixel window (row, col of the top-left corner), class, uncertainty."""

    rank: int
    row: int
    col: int
    size: int
    label: int
    uncertainty: float


def choose_spots(uncertainty: np.ndarray, labels: np.ndarray, count: int, spacing: float) -> list[tuple[int, int]]:
    """(row, col) cells of the ``[H, W]`` grids: most uncertain first, at least ``spacing`` cells apart, going round
    the classes (the class with the fewest picks so far takes the next most uncertain cell of its own).

    NaN uncertainty marks cells outside the scene's valid pixels; they are never picked.
    """
    valid = np.flatnonzero(~np.isnan(uncertainty))
    order = valid[np.argsort(-uncertainty.flat[valid], kind="stable")]
    order_labels = labels.flat[order].astype(np.int64)
    rows, cols = np.divmod(order, uncertainty.shape[1])
    free = np.ones(len(order), bool)
    taken: dict[int, int] = {}
    picked: list[tuple[int, int]] = []
    while len(picked) < count and free.any():
        available = np.unique(order_labels[free])
        wanted = min(available, key=lambda label: (taken.get(int(label), 0), int(label)))
        index = int(np.argmax(free & (order_labels == wanted)))  # the most uncertain free cell of that class
        picked.append((int(rows[index]), int(cols[index])))
        taken[int(wanted)] = taken.get(int(wanted), 0) + 1
        free &= (rows - rows[index]) ** 2 + (cols - cols[index]) ** 2 >= spacing**2
    return picked


def suggest_labels(
    scene: Scene,
    output: str,
    count: int = DEFAULT_SUGGESTED_SPOTS,
    box: int = DEFAULT_SPOT_PIXELS,
    adapter: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> list[Spot]:
    """Segment the scene, pick ``count`` boxes of ``box`` pixels to label, and write them as a GeoPackage."""
    from backend.jobs import open_model, segment

    check_writable(output, overwrite)
    card, model = open_model(scene, adapter)
    with tempfile.TemporaryDirectory(prefix="crossearth-suggest-") as folder:
        classes_path, confidence_path = str(Path(folder) / "classes.tif"), str(Path(folder) / "confidence.tif")
        segment(
            scene,
            SegmentOptions(output=classes_path, confidence=confidence_path),
            sub_progress(progress, 0.0, 0.9),
            is_cancelled,
            model=(card, model),
        )
        progress(0.9, "choosing where to label")
        with rasterio.open(classes_path) as classes, rasterio.open(confidence_path) as confidence:
            shape = (max(1, classes.height // box), max(1, classes.width // box))
            sure = confidence.read(1, out_shape=shape, resampling=Resampling.average, masked=True)
            labels = classes.read(1, out_shape=shape, resampling=Resampling.mode)
            transform, crs = classes.transform, classes.crs
    uncertainty = np.where(np.ma.getmaskarray(sure), np.nan, 1.0 - np.ma.filled(sure, 1.0))
    if np.isnan(uncertainty).all():
        raise BadInput(f"{scene.input}: no box of {box} pixels has valid pixels to suggest")
    spacing = math.sqrt(np.isfinite(uncertainty).sum() / count) / 2  # room for every spot when spread evenly
    cells = choose_spots(uncertainty, labels, count, spacing)
    spots = [
        Spot(rank, row * box, col * box, box, int(labels[row, col]), float(uncertainty[row, col]))
        for rank, (row, col) in enumerate(cells, 1)
    ]
    write_spots(spots, card.classes, transform, crs, output, overwrite)
    progress(1.0, f"{len(spots)} places to label written")
    return spots


def write_spots(spots: list[Spot], classes: list[dict], transform, crs, output: str, overwrite: bool) -> None:
    """The spots as box polygons with ``rank``, ``predicted`` (class name) and ``uncertainty`` (1 - confidence)."""
    from osgeo import ogr, osr

    names = {c["value"]: c["name"] for c in classes}
    with atomic_output(output, overwrite) as tmp:
        source = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
        srs = None
        if crs is not None:
            srs = osr.SpatialReference()
            srs.ImportFromWkt(crs.to_wkt())
            srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        layer = source.CreateLayer("suggested_labels", srs, ogr.wkbPolygon)
        for name, kind in (("rank", ogr.OFTInteger), ("predicted", ogr.OFTString), ("uncertainty", ogr.OFTReal)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        for spot in spots:
            scaled = [
                transform * (spot.col + dc * spot.size, spot.row + dr * spot.size)
                for dr, dc in ((0, 0), (0, 1), (1, 1), (1, 0), (0, 0))
            ]
            wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in scaled) + "))"
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
            feature.SetField("rank", spot.rank)
            feature.SetField("predicted", names.get(spot.label, str(spot.label)))
            feature.SetField("uncertainty", round(spot.uncertainty, 4))
            layer.CreateFeature(feature)
        feature = layer = None  # OGR's objects must go before their file
        source = None
