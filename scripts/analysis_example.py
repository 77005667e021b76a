"""The worked example of docs/analysis.md: every number and picture of that page comes from this script.

Segments the sample scene with the default model (and a copy with a simulated construction site), then
runs the analysis commands on it exactly as a user would (``python -m backend.cli ...``), fills the
stratified sample's reference field from the scene's labels (standing in for a photo-interpreter),
draws the pictures into docs/figures/ and prints the numbers the page quotes.

    python scripts/analysis_example.py [--out /tmp/analysis-example]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "resources" / "samples" / "dubai_tile6.tif"
LABELS = REPO / "resources" / "samples" / "dubai_tile6_labels.tif"
FIGURES = REPO / "docs" / "figures"
# the simulated construction site: a block of the labour camp pasted over mangroves (pixel windows)
SITE_SOURCE = (520, 80, 160, 160)  # row, col, height, width: the densest buildings of the camp
SITE_TARGET = (120, 1280, 160, 160)  # where they are pasted: mangroves (Vegetation)


def crossearth(*args: object) -> None:
    command = [sys.executable, "-m", "backend.cli", *map(str, args), "--overwrite"]
    print("$ crossearth", " ".join(str(a) for a in args), flush=True)
    subprocess.run(
        command, check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    )


def simulated_after(out: Path) -> Path:
    """The scene with a block of buildings pasted over vegetation by the creek."""
    after = out / "dubai_tile6_after.tif"
    with rasterio.open(SCENE) as source:
        profile, image = source.profile, source.read()
    r0, c0, h, w = SITE_SOURCE
    r1, c1, _, _ = SITE_TARGET
    image[:, r1 : r1 + h, c1 : c1 + w] = image[:, r0 : r0 + h, c0 : c0 + w]
    with rasterio.open(after, "w", **profile) as target:
        target.write(image)
    return after


def label_points(points: Path) -> None:
    """Fill the sample's ``class`` field with the label under each point (what an interpreter would do)."""
    from osgeo import ogr

    with rasterio.open(LABELS) as labels:
        truth = labels.read(1)
        transform = labels.transform
    names = ["Building", "Land", "Road", "Vegetation", "Water"]
    source = ogr.Open(str(points), 1)
    layer = source.GetLayer(0)
    layer.StartTransaction()
    for feature in layer:
        geom = feature.GetGeometryRef()
        col, row = ~transform * (geom.GetX(), geom.GetY())
        value = int(truth[int(row), int(col)])
        if value < len(names):  # 255: no label there, left empty (skipped by accuracy)
            feature.SetField("class", names[value])
            layer.SetFeature(feature)
    layer.CommitTransaction()
    source = None


def draw_polygons(polygons: Path, target: Path, window: tuple[float, float, float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, PathPatch
    from matplotlib.path import Path as MplPath
    from osgeo import ogr

    colours = {"Building": "#3C1098", "Land": "#8429F6", "Road": "#6EC1E4", "Vegetation": "#FEDD3A", "Water": "#E2A929"}
    xmin, ymin, xmax, ymax = window
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    source = ogr.Open(str(polygons))
    layer = source.GetLayer(0)
    layer.SetSpatialFilterRect(xmin, ymin, xmax, ymax)
    for feature in layer:
        geom = feature.GetGeometryRef()
        parts = [geom] if geom.GetGeometryType() == ogr.wkbPolygon else list(geom)
        for part in parts:
            vertices, codes = [], []
            for ring in part:
                points = ring.GetPoints()
                vertices += [p[:2] for p in points]
                codes += [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 2) + [MplPath.CLOSEPOLY]
            ax.add_patch(
                PathPatch(
                    MplPath(vertices, codes),
                    facecolor=colours[feature.GetField("name")],
                    edgecolor="black",
                    linewidth=0.3,
                )
            )
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    ax.legend(handles=[Patch(color=c, label=n) for n, c in colours.items()], fontsize=7, loc="upper right")
    ax.set_title("crossearth vectorize --min-area 20 --simplify 1.5 (a part of the scene)", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def draw_change(change: Path, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from backend.analysis.classes import read_class_raster

    raster = read_class_raster(change)
    with rasterio.open(change) as dataset:
        codes = dataset.read(1)
    rgb = np.full((*codes.shape, 3), 255, np.uint8)
    present = []
    for c in raster.classes:
        hit = codes == c.value
        if hit.any():
            rgb[hit] = c.rgb
            if "->" in c.name and hit.sum() > 200:
                present.append(c)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.imshow(rgb)
    ax.set_axis_off()
    ax.legend(handles=[Patch(color=c.color, label=c.name) for c in present], fontsize=7, loc="lower left")
    ax.set_title("crossearth change: changes in the new class's colour, unchanged washed out", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/analysis-example"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    classes, conf = out / "t6_classes.tif", out / "t6_conf.tif"
    crossearth("segment", SCENE, "-o", classes, "--confidence", conf, "--engine", "torch", "--threads", "1")
    crossearth(
        "vectorize",
        classes,
        "-o",
        out / "polygons.gpkg",
        "--confidence",
        conf,
        "--min-area",
        "20",
        "--simplify",
        "1.5",
        "--json-progress",
    )
    crossearth("areas", classes, "-o", out / "areas.csv")
    zones = out / "zones.gpkg"
    write_zones(zones)
    crossearth("areas", classes, "--zones", zones, "--zone-field", "part", "-o", out / "areas_zones.csv")
    crossearth("accuracy", classes, LABELS, "-o", out / "accuracy.json")
    crossearth("sample-points", classes, "-o", out / "sample.gpkg", "-n", "250", "--stratified", "--seed", "1")
    label_points(out / "sample.gpkg")
    crossearth("accuracy", classes, out / "sample.gpkg", "--field", "class", "-o", out / "accuracy_sample.json")
    after = simulated_after(out)
    after_classes = out / "t6_after_classes.tif"
    crossearth("segment", after, "-o", after_classes, "--engine", "torch", "--threads", "1")
    crossearth("change", classes, after_classes, "-o", out / "change.tif")
    crossearth("change", classes, after_classes, "-o", out / "change_only.tif", "--only-changes")

    FIGURES.mkdir(exist_ok=True)
    shutil.copy(out / "accuracy.png", FIGURES / "analysis_confusion.png")
    shutil.copy(out / "accuracy_sample.png", FIGURES / "analysis_confusion_sample.png")
    shutil.copy(out / "areas.png", FIGURES / "analysis_areas.png")
    shutil.copy(out / "areas_zones.png", FIGURES / "analysis_areas_zones.png")
    with rasterio.open(classes) as dataset:
        left, top = dataset.transform.c, dataset.transform.f
    window = (left, top - 1300, left + 700, top - 700)  # the labour camp
    draw_polygons(out / "polygons.gpkg", FIGURES / "analysis_polygons.png", window)
    draw_change(out / "change.tif", FIGURES / "analysis_change.png")
    print_numbers(out)


def write_zones(path: Path) -> None:
    """The four source images of the mosaic as zones, drawn in lon/lat (EPSG:4326) to show any CRS works."""
    from osgeo import ogr, osr
    from rasterio.warp import transform as transform_xy

    with rasterio.open(SCENE) as dataset:
        t, w, h = dataset.transform, dataset.width, dataset.height
    x0, y0, x1, y1 = t.c, t.f, t.c + w * t.a, t.f + h * t.e
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    parts = {
        "north-west": (x0, ym, xm, y0),
        "north-east": (xm, ym, x1, y0),
        "south-west": (x0, y1, xm, ym),
        "south-east": (xm, y1, x1, ym),
    }
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("zones", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("part", ogr.OFTString))
    for name, (a, b, c, d) in parts.items():
        ring = [(a + (c - a) * k / 50, b) for k in range(50)] + [(c, b + (d - b) * k / 50) for k in range(50)]
        ring += [(c - (c - a) * k / 50, d) for k in range(50)] + [(a, d - (d - b) * k / 50) for k in range(50)]
        lon, lat = transform_xy("EPSG:32640", "EPSG:4326", [p[0] for p in ring], [p[1] for p in ring])
        closed = [*zip(lon, lat, strict=True), (lon[0], lat[0])]
        wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in closed) + "))"
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("part", name)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    source = None


def print_numbers(out: Path) -> None:
    areas = json.loads((out / "areas.json").read_text())
    print("\n## class areas (whole scene)")
    for row in areas["rows"]:
        print(f"{row['name']:12s} {row['pixels']:>9,d} px {row['area_ha']:>9.2f} ha {row['percent']:6.2f} %")
    zones = json.loads((out / "areas_zones.json").read_text())
    print("\n## class areas per zone (ha)")
    for zone in zones["by_zone"]:
        print(zone["zone"], {e["name"]: round(e["area_ha"], 2) for e in zone["classes"]})
    report = json.loads((out / "accuracy.json").read_text())
    print("\n## accuracy against the label raster")
    print(
        "OA", round(report["overall_accuracy"], 4), "kappa", round(report["kappa"], 4), "mIoU", round(report["miou"], 4)
    )
    for name, row in report["per_class"].items():
        print(
            f"{name:12s} UA {row['users_accuracy']:.3f} PA {row['producers_accuracy']:.3f} F1 {row['f1']:.3f} "
            f"IoU {row['iou']:.3f}"
        )
    sample = json.loads((out / "accuracy_sample.json").read_text())
    weighted = sample["stratified"]
    print("\n## stratified sample", sample["samples"], "labelled points; counts", sample["confusion_counts"])
    oa = weighted["overall_accuracy"]
    print(f"OA {oa['estimate']:.3f} ± {oa['ci95']:.3f}")
    with rasterio.open(LABELS) as labels:
        truth = labels.read(1)
    for k, (name, est) in enumerate(weighted["per_class"].items()):
        census = (truth == k).sum() * 2.25 / 1e4
        print(
            f"{name:12s} UA {est['users_accuracy']['estimate']:.3f} ± {est['users_accuracy']['ci95']:.3f} "
            f"PA {est['producers_accuracy']['estimate']:.3f} ± {est['producers_accuracy']['ci95']:.3f} "
            f"area {est['area']['estimate'] / 1e4:.2f} ± {est['area']['ci95'] / 1e4:.2f} ha "
            f"(mapped {est['mapped_area'] / 1e4:.2f} ha, labels {census:.2f} ha)"
        )
    change = json.loads((out / "change.matrix.json").read_text())
    print("\n## change", change["changed_m2"], "m2 changed,", change["changed_percent"], "%")
    for row in sorted(change["rows"], key=lambda r: -r["area_m2"]):
        if row["from"] != row["to"] and row["area_m2"] > 0:
            print(f"{row['from']} -> {row['to']}: {row['area_m2']:.0f} m2 ({row['percent']:.3f} %)")
    with rasterio.open(out / "change_only.tif") as dataset:
        print("only-changes raster: changed pixels", int((dataset.read(1) != 255).sum()))


if __name__ == "__main__":
    main()
