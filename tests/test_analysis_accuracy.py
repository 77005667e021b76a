"""``crossearth accuracy`` and ``sample-points``: the numbers against hand computations and the published
worked example of Olofsson et al. (2014)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analysis_data import CLASSES, class_raster, grid, pixel_centre, plain_raster, rectangle, vector
from osgeo import ogr
from rasterio.warp import transform as transform_xy

from backend.analysis.accuracy import STRATA_KEY
from backend.analysis.estimators import confusion_scores, stratified_estimates
from backend.cli import run_in_process
from backend.rasters.class_raster import SegClass

# rows: map class, columns: reference class
HAND = np.array([[50, 3, 2], [5, 40, 5], [0, 5, 40]])
NAMES = [c.name for c in CLASSES]


def run(argv: list) -> tuple[int, list[dict]]:
    events: list[dict] = []
    code = run_in_process([str(a) for a in argv], events.append, lambda: False)
    return code, events


def test_three_class_confusion_matrix_gives_the_hand_computed_measures():
    scores = confusion_scores(HAND, NAMES)
    assert scores["overall_accuracy"] == pytest.approx(130 / 150)
    chance = (55 * 55 + 50 * 48 + 45 * 47) / 150**2
    assert scores["kappa"] == pytest.approx((130 / 150 - chance) / (1 - chance))
    building, land, vegetation = (scores["per_class"][n] for n in NAMES)
    assert building["users_accuracy"] == pytest.approx(50 / 55)
    assert land["users_accuracy"] == pytest.approx(40 / 50)
    assert land["producers_accuracy"] == pytest.approx(40 / 48)
    assert vegetation["producers_accuracy"] == pytest.approx(40 / 47)
    assert land["f1"] == pytest.approx(2 * 40 / (50 + 48))
    assert [scores["per_class"][n]["iou"] for n in NAMES] == pytest.approx([50 / 60, 40 / 58, 40 / 52])
    assert scores["miou"] == pytest.approx((50 / 60 + 40 / 58 + 40 / 52) / 3)
    assert scores["confusion_proportions"][1][2] == pytest.approx(5 / 150)


def hand_rasters(tmp_path):
    """A 10 x 15 map and a reference raster (no class names) whose pixel pairs give HAND."""
    pairs = [(i, j) for i in range(3) for j in range(3) for _ in range(HAND[i, j])]
    mapped = np.array([p[0] for p in pairs]).reshape(10, 15)
    reference = np.array([p[1] for p in pairs]).reshape(10, 15)
    return class_raster(tmp_path / "map.tif", mapped), plain_raster(tmp_path / "ref.tif", reference)


def test_accuracy_against_a_reference_raster_writes_the_hand_matrix_its_table_and_picture(tmp_path):
    mapped, reference = hand_rasters(tmp_path)
    code, events = run(["accuracy", mapped, reference, "-o", tmp_path / "report.json", "--json-progress"])
    assert code == 0, events
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["confusion_counts"] == HAND.tolist() and report["reference_kind"] == "raster"
    result = next(e for e in events if e["type"] == "result")
    assert result["outputs"] == {
        "OUTPUT": str(tmp_path / "report.json"),
        "TABLE": str(tmp_path / "report.csv"),
        "PLOT": str(tmp_path / "report.png"),
    }
    assert result["metrics"]["overall_accuracy"] == pytest.approx(130 / 150)
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "report.csv").read_text().splitlines()
    assert table[0].startswith("class,users_accuracy,producers_accuracy,f1,iou") and table[1].startswith("Building,")
    assert "stratified" not in report


OLOFSSON = [
    SegClass(1, "Deforestation", "#FF0000"),
    SegClass(2, "Forest gain", "#0000FF"),
    SegClass(3, "Stable forest", "#00AA00"),
    SegClass(4, "Stable non-forest", "#CCCCCC"),
]
# Olofsson et al. (2014), section 5 / table 8: sample counts, rows map, columns reference
OLOFSSON_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOFSSON_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]  # 30 m Landsat pixels, 0.09 ha each


def test_stratified_estimators_reproduce_the_olofsson_2014_worked_example():
    """The published figures, to the paper's rounding: OA 0.947 +- 0.018, U 0.88 +- 0.07 and 0.73 +- 0.10,
    P 0.75 +- 0.21 and 0.85 +- 0.25, areas 21,158 +- 6,158 / 11,686 +- 3,756 / 285,770 +- 15,510 /
    581,386 +- 16,282 ha."""
    est = stratified_estimates(OLOFSSON_COUNTS, [p * 0.09 for p in OLOFSSON_PIXELS], [c.name for c in OLOFSSON])
    assert round(est["overall_accuracy"]["estimate"], 3) == 0.947
    assert round(est["overall_accuracy"]["ci95"], 3) == 0.018
    per = est["per_class"]
    assert [round(per[c.name]["users_accuracy"]["estimate"], 2) for c in OLOFSSON] == [0.88, 0.73, 0.93, 0.96]
    assert [round(per[c.name]["users_accuracy"]["ci95"], 2) for c in OLOFSSON[:2]] == [0.07, 0.10]
    assert [round(per[c.name]["producers_accuracy"]["estimate"], 2) for c in OLOFSSON] == [0.75, 0.85, 0.93, 0.96]
    assert [round(per[c.name]["producers_accuracy"]["ci95"], 2) for c in OLOFSSON] == [0.21, 0.25, 0.03, 0.02]
    assert [round(per[c.name]["area"]["estimate"]) for c in OLOFSSON] == [21_158, 11_686, 285_770, 581_386]
    assert [round(per[c.name]["area"]["ci95"]) for c in OLOFSSON] == [6_158, 3_756, 15_510, 16_282]


def test_accuracy_of_a_stratified_point_sample_reports_the_olofsson_estimates_end_to_end(tmp_path):
    """The worked example as files: a map, 640 points labelled as in table 8, the strata's areas recorded."""
    mapped = class_raster(tmp_path / "map.tif", np.repeat(np.arange(1, 5)[:, None], 400, axis=1), OLOFSSON)
    points, labels = [], []
    for i in range(4):
        col = 0
        for j in range(4):
            for _ in range(OLOFSSON_COUNTS[i, j]):
                x, y = pixel_centre(i, col)
                points.append(f"POINT ({x} {y})")
                labels.append(OLOFSSON[j].name)
                col += 1
    strata = {str(c.value): p * 900.0 for c, p in zip(OLOFSSON, OLOFSSON_PIXELS, strict=True)}
    sample = vector(
        tmp_path / "sample.gpkg",
        points,
        field="truth",
        values=labels,
        metadata={STRATA_KEY: json.dumps({"strata_m2": strata})},
    )
    code, events = run(["accuracy", mapped, sample, "--field", "truth", "-o", tmp_path / "r.json"])
    assert code == 0, events
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["confusion_counts"] == OLOFSSON_COUNTS.tolist() and report["reference_kind"] == "points"
    weighted = report["stratified"]
    assert round(weighted["overall_accuracy"]["estimate"], 3) == 0.947
    deforestation = weighted["per_class"]["Deforestation"]["area"]
    assert (round(deforestation["estimate"] / 1e4), round(deforestation["ci95"] / 1e4)) == (21_158, 6_158)
    assert "area_m2_estimated_ci95" in (tmp_path / "r.csv").read_text().splitlines()[0]


def test_reference_points_in_another_crs_with_class_names_or_values(tmp_path):
    data = np.zeros((20, 20), np.uint8)
    data[:, 10:] = 2
    mapped = class_raster(tmp_path / "map.tif", data)
    cells = [(2, 3), (5, 15), (12, 12), (18, 1)]
    xs, ys = zip(*(pixel_centre(r, c) for r, c in cells), strict=True)
    lon, lat = transform_xy("EPSG:32640", "EPSG:4326", list(xs), list(ys))
    wkts = [f"POINT ({x!r} {y!r})" for x, y in zip(lon, lat, strict=True)]
    # truth: Building, Vegetation, Land (wrong: the map says Vegetation), 0 (= Building, as a value)
    named = vector(
        tmp_path / "pts.gpkg", wkts, epsg=4326, field="class", values=["building", "Vegetation", "Land", "0"]
    )
    code, events = run(["accuracy", mapped, named, "-o", tmp_path / "r.json"])
    assert code == 0, events
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["confusion_counts"] == [[2, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert report["overall_accuracy"] == pytest.approx(0.75)


def test_reference_polygons_count_every_pixel_centre_inside(tmp_path):
    data = np.zeros((20, 20), np.uint8)
    data[:, 10:] = 1
    mapped = class_raster(tmp_path / "map.tif", data)
    # 4 x 5 pixels labelled Land straddling the boundary (2 x 5 mapped Building, 2 x 5 Land), 3 x 3 Vegetation
    polygons = vector(
        tmp_path / "refs.gpkg", [rectangle(8, 0, 12, 5), rectangle(0, 10, 3, 13)], field="class", values=[1, 2]
    )
    code, events = run(["accuracy", mapped, polygons, "-o", tmp_path / "r.json"])
    assert code == 0, events
    counts = json.loads((tmp_path / "r.json").read_text())["confusion_counts"]
    assert counts == [[0, 10, 9], [0, 10, 0], [0, 0, 0]]


def test_stratified_sample_points_split_equally_lie_on_their_class_and_record_the_strata(tmp_path):
    data = np.zeros((30, 40), np.uint8)
    data[:, 30:] = 1
    data[25:, :] = 2
    data[0, 0] = 255
    mapped = class_raster(tmp_path / "map.tif", data)
    code, events = run(["sample-points", mapped, "-o", tmp_path / "pts.gpkg", "-n", "30", "--stratified"])
    assert code == 0, events
    source = ogr.Open(str(tmp_path / "pts.gpkg"))
    layer = source.GetLayer(0)
    strata = json.loads(layer.GetMetadataItem(STRATA_KEY))
    assert strata["strata_pixels"] == {"0": 749, "1": 250, "2": 200}
    assert strata["strata_m2"] == {"0": 749 * 4.0, "1": 250 * 4.0, "2": 200 * 4.0}
    per_class = {0: 0, 1: 0, 2: 0}
    for feature in layer:
        x, y = feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY()
        col, row = int((x - 300_000) / 2), int((2_800_000 - y) / 2)
        assert data[row, col] == feature.GetField("map_class")
        assert feature.GetField("class") is None  # for the interpreter to fill
        per_class[feature.GetField("map_class")] += 1
    assert per_class == {0: 10, 1: 10, 2: 10}
    source = None
    again = tmp_path / "again.gpkg"
    assert run(["sample-points", mapped, "-o", again, "-n", "30", "--stratified"])[0] == 0
    assert _points(again) == _points(tmp_path / "pts.gpkg")  # the seed makes the draw repeatable


def _points(path) -> list[tuple[float, float]]:
    source = ogr.Open(str(path))
    return sorted((f.GetGeometryRef().GetX(), f.GetGeometryRef().GetY()) for f in source.GetLayer(0))


def test_a_filled_stratified_sample_gives_the_weighted_estimates_of_its_map(tmp_path):
    """Label the drawn points with the truth raster, then assess: a perfect map has OA 1 and its own areas."""
    data = np.zeros((30, 40), np.uint8)
    data[:, 30:] = 1
    mapped = class_raster(tmp_path / "map.tif", data)
    assert run(["sample-points", mapped, "-o", tmp_path / "pts.gpkg", "-n", "20", "--stratified"])[0] == 0
    source = ogr.Open(str(tmp_path / "pts.gpkg"), 1)
    layer = source.GetLayer(0)
    for feature in layer:
        feature.SetField("class", feature.GetField("map_name"))
        layer.SetFeature(feature)
    source = None
    code, events = run(["accuracy", mapped, tmp_path / "pts.gpkg", "-o", tmp_path / "r.json"])
    assert code == 0, events
    weighted = json.loads((tmp_path / "r.json").read_text())["stratified"]
    assert weighted["overall_accuracy"]["estimate"] == pytest.approx(1.0)
    assert weighted["per_class"]["Building"]["area"]["estimate"] == pytest.approx(900 * 4.0)
    assert weighted["per_class"]["Land"]["area"]["ci95"] == pytest.approx(0.0)


def test_a_reference_raster_on_another_grid_is_read_on_the_maps_with_a_warning(tmp_path):
    """Labels at 1 m under a 2 m map: each map pixel is compared with the label at its centre's nearest."""
    mapped_data = np.zeros((10, 10), np.uint8)
    mapped_data[:, 5:] = 1
    mapped = class_raster(tmp_path / "map.tif", mapped_data)
    fine = np.ones((20, 20), np.uint8)  # all Land at 1 m: the map's left half (Building) is wrong
    fine[:2, :] = 255  # the top map row has no label
    reference = plain_raster(tmp_path / "fine.tif", fine, transform=grid(1.0))
    code, events = run(["accuracy", mapped, reference, "-o", tmp_path / "r.json"])
    assert code == 0, events
    assert any(e["type"] == "log" and e["level"] == "warning" and "nearest" in e["message"] for e in events)
    counts = json.loads((tmp_path / "r.json").read_text())["confusion_counts"]
    assert counts == [[0, 45, 0], [0, 45, 0], [0, 0, 0]]
