"""``crossearth areas``: pixels, m2, ha and percentage of each class (and of nodata) per zone.

Zones are polygons in any CRS, brought to the raster's; a pixel belongs to a zone when its centre
lies inside (overlapping zones each count it). Without zones the whole raster is one zone.
"""

from __future__ import annotations

import math
import os

import numpy as np
import rasterio
from rasterio.features import bounds, geometry_mask
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from backend.analysis.classes import ClassRaster, ValueIndex, add_counts, read_class_raster, strips
from backend.analysis.vectors import read_features
from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.rasters.atomic import atomic_output

WHOLE = "all"
NODATA = "nodata"


def _accumulate(raster: ClassRaster, data: np.ndarray, areas: np.ndarray, pixels, m2, inside=None) -> None:
    """Add counts and areas of one strip into ``pixels``/``m2`` (one slot per class, the last for nodata)."""
    k = len(raster.classes)
    index = ValueIndex.of(raster)(data)
    index[index < 0] = k  # nodata and values that are no class
    add_counts(index, areas, k + 1, pixels, m2, inside)


def class_areas(
    classes: str,
    zones: str | None = None,
    zone_field: str | None = None,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> dict:
    raster = read_class_raster(classes)
    k = len(raster.classes)
    if zones is None:
        if zone_field is not None:
            raise BadInput(f"--zone-field {zone_field}: needs --zones")
        pixels, m2 = np.zeros(k + 1, np.int64), np.zeros(k + 1)
        windows = list(strips(raster.width, raster.height))
        with rasterio.open(raster.path) as dataset:
            for done, window in enumerate(windows, start=1):
                check_cancelled(is_cancelled)
                data = dataset.read(1, window=window)
                areas = raster.row_areas_m2(int(window.row_off), int(window.height))
                _accumulate(raster, data, areas, pixels, m2)
                progress(done / len(windows), f"rows {int(window.row_off + window.height)} of {raster.height}")
        return _table(raster, [(WHOLE, pixels, m2)], zones=None, zone_field=None)
    layer = read_features(zones, raster.crs, zone_field)
    if layer.kind != "polygon":
        raise BadInput(f"{zones}: zones must be polygons, it holds points")
    results = []
    with rasterio.open(raster.path) as dataset:
        for number, feature in enumerate(layer.features, start=1):
            check_cancelled(is_cancelled)
            name = str(feature.value) if zone_field is not None else str(number)
            pixels, m2 = np.zeros(k + 1, np.int64), np.zeros(k + 1)
            xmin, ymin, xmax, ymax = bounds(feature.geometry)
            window = from_bounds(xmin, ymin, xmax, ymax, transform=raster.transform)
            col0, row0 = max(math.floor(window.col_off), 0), max(math.floor(window.row_off), 0)
            col1 = min(math.ceil(window.col_off + window.width), raster.width)
            row1 = min(math.ceil(window.row_off + window.height), raster.height)
            if col1 > col0 and row1 > row0:
                for part in strips(col1 - col0, row1 - row0):
                    win = Window(col0, row0 + part.row_off, col1 - col0, part.height)
                    inside = geometry_mask(
                        [feature.geometry],
                        out_shape=(int(win.height), int(win.width)),
                        transform=window_transform(win, raster.transform),
                        invert=True,
                    )
                    areas = raster.row_areas_m2(int(win.row_off), int(win.height))
                    _accumulate(raster, dataset.read(1, window=win), areas, pixels, m2, inside)
            results.append((name, pixels, m2))
            progress(number / len(layer.features), f"zone {number} of {len(layer.features)}")
    if all(pixels.sum() == 0 for _, pixels, _ in results):
        raise BadInput(f"{zones}: no zone covers a pixel centre of {classes}")
    return _table(raster, results, zones=zones, zone_field=zone_field)


def _table(raster: ClassRaster, results, zones, zone_field) -> dict:
    labels = [*raster.classes, None]
    rows = []
    out_zones = []
    for zone, pixels, m2 in results:
        total = int(pixels.sum())
        entries = []
        for slot, segclass in enumerate(labels):
            entry = {
                "zone": zone,
                "class": segclass.value if segclass else None,
                "name": segclass.name if segclass else NODATA,
                "pixels": int(pixels[slot]),
                "area_m2": round(float(m2[slot]), 3),
                "area_ha": round(float(m2[slot]) / 10_000, 6),
                "percent": round(100.0 * pixels[slot] / total, 4) if total else 0.0,
            }
            entries.append(entry)
            rows.append(entry)
        out_zones.append({"zone": zone, "pixels": total, "area_m2": round(float(m2.sum()), 3), "classes": entries})
    return {
        "classes_raster": raster.path,
        "zones": zones,
        "zone_field": zone_field,
        "colors": {c.name: c.color for c in raster.classes},
        "rows": rows,
        "by_zone": out_zones,
    }


COLUMNS = ["zone", "class", "name", "pixels", "area_m2", "area_ha", "percent"]


def plot_areas(table: dict, path: str | os.PathLike, overwrite: bool) -> None:
    """A bar per class (grouped by zone when there are several, at most 12 zones drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zones = table["by_zone"][:12]
    names = [name for name in table["colors"]]
    width = 0.8 / max(len(zones), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 1), 3.6))
    for z, zone in enumerate(zones):
        values = [next(e["area_ha"] for e in zone["classes"] if e["name"] == n) for n in names]
        offsets = np.arange(len(names)) + (z - (len(zones) - 1) / 2) * width
        bars = ax.bar(
            offsets,
            values,
            width,
            color=[table["colors"][n] for n in names],
            edgecolor="black",
            linewidth=0.4,
            label=str(zone["zone"]),
        )
        if len(zones) == 1:
            for bar, entry in zip(bars, [e for e in zone["classes"] if e["name"] in names], strict=True):
                ax.annotate(
                    f"{entry['percent']:.1f} %",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("area (ha)")
    ax.set_title("class areas" + (f" by {table['zone_field'] or 'zone'}" if len(zones) > 1 else ""), fontsize=10)
    ax.margins(y=0.15)
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_areas(table: dict, output: str, json_out: str, chart: str | None, overwrite: bool) -> dict:
    from backend.analysis.accuracy import write_csv, write_json
    from backend.rasters.atomic import check_writable

    for target in (output, json_out, chart):
        if target:
            check_writable(target, overwrite)
    write_csv(output, [{c: row[c] for c in COLUMNS} for row in table["rows"]], overwrite)
    write_json(json_out, table, overwrite)
    outputs = {"OUTPUT": output, "JSON": json_out}
    if chart:
        plot_areas(table, chart, overwrite)
        outputs["CHART"] = chart
    return outputs


def summary(table: dict) -> dict:
    """Metrics for the CLI's result event: ha per class of the whole (or first) zone."""
    zone = table["by_zone"][0]
    return {"zones": len(table["by_zone"]), "area_ha": {e["name"]: e["area_ha"] for e in zone["classes"]}}
