"""``vectorize``, ``areas`` and ``change`` on small class rasters whose answers can be counted by hand, the
streaming path (rasters larger than the block budget) and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from analysis_data import CLASSES, class_raster, grid, plain_raster, vector
from osgeo import ogr
from rasterio.warp import transform as transform_xy

from backend.analysis import classes as analysis_classes
from backend.cli import run_in_process

VEGETATION, BUILDING = 2, 0


def run(argv: list) -> tuple[int, list[dict]]:
    events: list[dict] = []
    code = run_in_process([str(a) for a in argv], events.append, lambda: False)
    return code, events


def result_of(events: list[dict]) -> dict:
    return next(e for e in events if e["type"] == "result")


def blocks(height: int = 40, width: int = 50) -> np.ndarray:
    """Land everywhere; a Vegetation square, two Building squares (one of 2 x 2 pixels), a nodata corner."""
    data = np.ones((height, width), np.uint8)
    data[5:15, 5:20] = VEGETATION
    data[20:30, 30:45] = BUILDING
    data[2:4, 40:42] = BUILDING  # 4 pixels = 16 m2
    data[35:, :5] = 255
    return data


def features(path) -> list[dict]:
    source = ogr.Open(str(path))
    out = [dict(f.items()) | {"wkt": f.GetGeometryRef().ExportToWkt()} for f in source.GetLayer(0)]
    source = None
    return out


def test_vectorize_writes_one_polygon_per_region_whose_areas_add_up_to_the_class_areas(tmp_path):
    data = blocks()
    confidence = np.full(data.shape, 0.5, np.float32)
    confidence[5:15, 5:20] = 0.9
    raster = class_raster(tmp_path / "classes.tif", data, confidence=confidence)
    out = tmp_path / "polygons.gpkg"
    code, events = run(["vectorize", raster, "-o", out, "--confidence", tmp_path / "classes_conf.tif"])
    assert code == 0, events
    polygons = features(out)
    assert sorted((p["name"], p["area_m2"]) for p in polygons) == [
        ("Building", 16.0),
        ("Building", 600.0),
        ("Land", 4.0 * (40 * 50 - 150 - 150 - 4 - 25)),
        ("Vegetation", 600.0),
    ]
    vegetation = next(p for p in polygons if p["name"] == "Vegetation")
    assert vegetation["class"] == VEGETATION and vegetation["confidence"] == pytest.approx(0.9)
    assert next(p for p in polygons if p["name"] == "Land")["confidence"] == pytest.approx(0.5)
    assert result_of(events)["metrics"]["area_m2"]["Building"] == 616.0


def test_min_area_merges_small_regions_into_their_neighbours_and_keeps_the_total(tmp_path):
    raster = class_raster(tmp_path / "classes.tif", blocks())
    out = tmp_path / "polygons.gpkg"
    assert run(["vectorize", raster, "-o", out, "--min-area", "20", "--simplify", "2"])[0] == 0
    polygons = features(out)
    assert min(p["area_m2"] for p in polygons) >= 20
    by_class = {}
    for p in polygons:
        by_class[p["name"]] = by_class.get(p["name"], 0) + p["area_m2"]
    assert by_class == {"Building": 600.0, "Land": 4.0 * (2000 - 300 - 25), "Vegetation": 600.0}
    assert all(ogr.CreateGeometryFromWkt(p["wkt"]).IsValid() for p in polygons)


def test_areas_of_the_whole_raster_count_each_class_and_nodata(tmp_path):
    raster = class_raster(tmp_path / "classes.tif", blocks())
    code, events = run(["areas", raster, "-o", tmp_path / "areas.csv"])
    assert code == 0, events
    table = json.loads((tmp_path / "areas.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert rows["Building"]["pixels"] == 154 and rows["Building"]["area_m2"] == 616.0
    assert rows["Building"]["area_ha"] == pytest.approx(0.0616)
    assert rows["nodata"]["pixels"] == 25 and rows["nodata"]["percent"] == pytest.approx(100 * 25 / 2000)
    assert sum(r["percent"] for r in table["rows"]) == pytest.approx(100)
    assert (tmp_path / "areas.csv").read_text().splitlines()[0] == "zone,class,name,pixels,area_m2,area_ha,percent"
    assert (tmp_path / "areas.png").read_bytes()[:4] == b"\x89PNG"


def test_zones_in_another_crs_split_pixels_by_their_centre(tmp_path):
    raster = class_raster(tmp_path / "classes.tif", blocks())
    # zone "west": columns 0..24 (a pixel edge), rows 0..39; drawn in lon/lat, its edges densified
    x0, x1, y0, y1 = 300_000.0, 300_050.0, 2_799_920.0, 2_800_000.0
    ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    dense = [
        (ax + (bx - ax) * t / 20, ay + (by - ay) * t / 20)
        for (ax, ay), (bx, by) in zip(ring, ring[1:] + ring[:1], strict=True)
        for t in range(20)
    ]
    lon, lat = transform_xy("EPSG:32640", "EPSG:4326", [p[0] for p in dense], [p[1] for p in dense])
    wkt = "POLYGON ((" + ", ".join(f"{a!r} {b!r}" for a, b in [*zip(lon, lat, strict=True), (lon[0], lat[0])]) + "))"
    # zone "buildings": the 600 m2 Building square (columns 30..44, rows 20..29), in lon/lat too
    bx, by = transform_xy(
        "EPSG:32640",
        "EPSG:4326",
        [300_060.0, 300_090.0, 300_090.0, 300_060.0],
        [2_799_940.0, 2_799_940.0, 2_799_960.0, 2_799_960.0],
    )
    second = "POLYGON ((" + ", ".join(f"{a!r} {b!r}" for a, b in [*zip(bx, by, strict=True), (bx[0], by[0])]) + "))"
    zones = vector(tmp_path / "zones.gpkg", [wkt, second], epsg=4326, field="name", values=["west", "buildings"])
    code, events = run(["areas", raster, "--zones", zones, "--zone-field", "name", "-o", tmp_path / "a.csv"])
    assert code == 0, events
    table = json.loads((tmp_path / "a.json").read_text())
    west = {e["name"]: e["pixels"] for e in table["by_zone"][0]["classes"]}
    assert table["by_zone"][0]["zone"] == "west"
    assert west == {"Building": 0, "Land": 25 * 40 - 150 - 25, "Vegetation": 150, "nodata": 25}
    buildings = {e["name"]: e["pixels"] for e in table["by_zone"][1]["classes"]}
    assert buildings == {"Building": 150, "Land": 0, "Vegetation": 0, "nodata": 0}


def simulated_change(tmp_path):
    """The same scene twice; in the second, part of the Vegetation square was built over."""
    before = blocks()
    after = before.copy()
    after[5:15, 5:10] = BUILDING  # 50 pixels Vegetation -> Building
    return class_raster(tmp_path / "before.tif", before), class_raster(tmp_path / "after.tif", after)


def test_change_writes_named_from_to_classes_and_the_transition_matrix(tmp_path):
    before, after = simulated_change(tmp_path)
    code, events = run(["change", before, after, "-o", tmp_path / "change.tif"])
    assert code == 0, events
    report = json.loads((tmp_path / "change.matrix.json").read_text())
    names = [c.name for c in CLASSES]
    m2 = dict(zip([(a, b) for a in names for b in names], [v for row in report["matrix_m2"] for v in row], strict=True))
    assert m2[("Vegetation", "Building")] == 200.0 and m2[("Vegetation", "Vegetation")] == 400.0
    assert m2[("Building", "Building")] == 616.0 and m2[("Land", "Vegetation")] == 0.0
    assert report["changed_m2"] == 200.0 and report["changed_percent"] == round(100 * 50 / 1975, 4)
    with rasterio.open(tmp_path / "change.tif") as dataset:
        codes = dataset.read(1)
        colormap = dataset.colormap(1)
    assert codes[5, 5] == VEGETATION * 3 + BUILDING and codes[5, 12] == VEGETATION * 3 + VEGETATION
    assert codes[39, 0] == 255
    raster = analysis_classes.read_class_raster(tmp_path / "change.tif")
    assert raster.name_of(6) == "Vegetation -> Building" and raster.name_of(8) == "Vegetation (unchanged)"
    assert colormap[6][:3] == CLASSES[0].rgb  # a change is drawn in its new class's colour
    csv_lines = (tmp_path / "change.matrix.csv").read_text().splitlines()
    assert "Vegetation,Building,50,200.0,0.02," in "\n".join(csv_lines)


def test_only_changes_leaves_unchanged_pixels_as_nodata(tmp_path):
    before, after = simulated_change(tmp_path)
    assert run(["change", before, after, "-o", tmp_path / "c.tif", "--only-changes"])[0] == 0
    with rasterio.open(tmp_path / "c.tif") as dataset:
        codes = dataset.read(1)
    assert (codes != 255).sum() == 50 and set(np.unique(codes)) == {6, 255}


def test_an_after_raster_on_a_finer_grid_is_resampled_by_mode_with_a_warning(tmp_path):
    before, _ = simulated_change(tmp_path)
    finer = np.repeat(np.repeat(blocks(), 2, axis=0), 2, axis=1)
    finer[10:30, 10:20] = BUILDING  # the same 50 coarse pixels, at 1 m
    after = class_raster(tmp_path / "after_1m.tif", finer, transform=grid(1.0))
    code, events = run(["change", before, after, "-o", tmp_path / "c.tif"])
    assert code == 0, events
    assert any(e["type"] == "log" and e["level"] == "warning" and "by mode" in e["message"] for e in events)
    report = json.loads((tmp_path / "c.matrix.json").read_text())
    assert report["resampled"] is True and report["changed_m2"] == 200.0


def test_rasters_larger_than_the_block_budget_stream_and_give_the_same_answers(tmp_path, monkeypatch):
    """With a budget of 128 pixels, each command reads a 200 x 300 raster in 600 strips of under one row's width."""
    data = np.tile(blocks(), (5, 6))
    raster = class_raster(tmp_path / "big.tif", data)
    before, after = raster, class_raster(tmp_path / "big_after.tif", np.where(data == VEGETATION, BUILDING, data))
    labels = plain_raster(tmp_path / "labels.tif", np.where(data == 255, 255, (data + 1) % 3))

    def answers(folder):
        folder.mkdir()
        assert run(["areas", raster, "-o", folder / "a.csv", "--no-chart"])[0] == 0
        assert run(["accuracy", raster, labels, "-o", folder / "r.json"])[0] == 0
        assert run(["change", before, after, "-o", folder / "c.tif"])[0] == 0
        assert run(["vectorize", raster, "-o", folder / "p.gpkg"])[0] == 0
        assert run(["sample-points", raster, "-o", folder / "s.gpkg", "-n", "12", "--stratified"])[0] == 0
        with rasterio.open(folder / "c.tif") as dataset:
            change = dataset.read(1)
        return (
            json.loads((folder / "a.json").read_text())["rows"],
            json.loads((folder / "r.json").read_text())["confusion_counts"],
            change,
            sorted(round(p["area_m2"]) for p in features(folder / "p.gpkg")),
            sorted(f["wkt"] for f in features(folder / "s.gpkg")),
        )

    whole = answers(tmp_path / "whole")
    reads = []
    original = analysis_classes.strips

    def small_strips(width, height, block_pixels=None):
        for window in original(width, height, 128):
            reads.append(window.width * window.height)
            yield window

    for module in ("classes", "areas", "accuracy", "change", "sampling"):
        monkeypatch.setattr(f"backend.analysis.{module}.strips", small_strips, raising=False)
    streamed = answers(tmp_path / "streamed")
    assert max(reads) == 300 and len(reads) == 5 * 200  # one row at a time: areas, accuracy, change, 2 x sampling
    assert whole[0] == streamed[0] and whole[1] == streamed[1] and whole[3] == streamed[3]
    assert (whole[2] == streamed[2]).all() and whole[4] == streamed[4]
    assert sum(map(sum, whole[1])) == 200 * 300 - 25 * 30  # every classified pixel compared once


def no_names(tmp_path):
    return plain_raster(tmp_path / "plain.tif", blocks())


def bad_cases(tmp_path) -> dict[str, tuple[list, str]]:
    raster = class_raster(tmp_path / "classes.tif", blocks())
    plain = no_names(tmp_path)
    far_points = vector(tmp_path / "far.gpkg", ["POINT (0 0)", "POINT (1 1)"], field="class", values=[0, 1])
    far_zones = vector(tmp_path / "farzones.gpkg", ["POLYGON ((0 0, 1 0, 1 1, 0 0))"], field="name", values=["x"])
    strange = vector(tmp_path / "strange.gpkg", ["POINT (300010 2799990)"], field="class", values=["Glacier"])
    stray = plain_raster(tmp_path / "stray.tif", np.full((40, 50), 7, np.uint8))
    elsewhere = class_raster(tmp_path / "elsewhere.tif", blocks(), transform=Affine.translation(2e5, 0) * grid())
    no_crs = class_raster(tmp_path / "nocrs.tif", blocks(), crs=None, transform=grid(3.0))
    return {
        "class raster without names (areas)": (["areas", plain, "-o", tmp_path / "o.csv"], "plain.tif"),
        "class raster without names (vectorize)": (["vectorize", plain, "-o", tmp_path / "o.gpkg"], "no class names"),
        "class raster without names (accuracy)": (["accuracy", plain, raster, "-o", tmp_path / "o.json"], "plain.tif"),
        "reference class the map lacks": (["accuracy", raster, strange, "-o", tmp_path / "o.json"], "Glacier"),
        "reference value the map lacks": (["accuracy", raster, stray, "-o", tmp_path / "o.json"], "stray.tif"),
        "points off the raster": (["accuracy", raster, far_points, "-o", tmp_path / "o.json"], "far.gpkg"),
        "zones off the raster": (["areas", raster, "--zones", far_zones, "-o", tmp_path / "o.csv"], "farzones.gpkg"),
        "missing field": (
            ["accuracy", raster, strange, "--field", "truth", "-o", tmp_path / "o.json"],
            "has no field 'truth'",
        ),
        "missing zone field": (
            ["areas", raster, "--zones", far_zones, "--zone-field", "id", "-o", tmp_path / "o.csv"],
            "farzones.gpkg",
        ),
        "grids that do not overlap": (["change", raster, elsewhere, "-o", tmp_path / "o.tif"], "elsewhere.tif"),
        "grid without a crs": (["change", raster, no_crs, "-o", tmp_path / "o.tif"], "nocrs.tif"),
        "confidence on another grid": (
            ["vectorize", raster, "--confidence", no_crs, "-o", tmp_path / "o.gpkg"],
            "nocrs.tif",
        ),
        "missing reference": (["accuracy", raster, tmp_path / "nope.gpkg", "-o", tmp_path / "o.json"], "nope.gpkg"),
    }


def test_every_bad_input_gives_one_line_naming_the_file_exit_2_and_writes_nothing(tmp_path):
    cases = bad_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name, (argv, must_mention) in cases.items():
        code, events = run([*argv, "--json-progress"])
        errors = [e for e in events if e["type"] == "error"]
        assert code == 2, (name, events)
        assert len(errors) == 1 and "\n" not in errors[0]["message"], (name, errors)
        assert must_mention in errors[0]["message"], (name, errors[0]["message"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def tiled_vrt(path, tile, tiles: int, size: int) -> None:
    """A VRT ``tiles`` x ``tiles`` copies of the class raster ``tile`` wide, with its names and colours."""
    with rasterio.open(tile) as dataset:
        crs_wkt, transform = dataset.crs.to_wkt(), dataset.transform
    entries = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="255"/>' for r, g, b in (c.rgb for c in CLASSES))
    names = "".join(f"<Category>{c.name}</Category>" for c in CLASSES)
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{tile.name}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
        f'<DstRect xOff="{i * size}" yOff="{j * size}" xSize="{size}" ySize="{size}"/></SimpleSource>'
        for j in range(tiles)
        for i in range(tiles)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{tiles * size}" rasterYSize="{tiles * size}"><SRS>{crs_wkt}</SRS>'
        f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>"
        f'<VRTRasterBand dataType="Byte" band="1"><NoDataValue>255</NoDataValue><ColorInterp>Palette</ColorInterp>'
        f"<CategoryNames>{names}</CategoryNames><ColorTable>{entries}</ColorTable>{sources}</VRTRasterBand>"
        f"</VRTDataset>"
    )


def peak_mib(*args) -> float:
    """Run the CLI in a fresh process that prints its own peak memory (KiB) last, in MiB: VmHWM, since ru_maxrss
    would carry over this test process's peak through fork and exec. GDAL's block cache (5 % of the RAM by
    default) is bounded too, but is not what the memory tests measure."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    probe = (
        "import sys; from backend.cli import app; "
        "app(sys.argv[1:], standalone_mode=False, prog_name='crossearth'); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    env = {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "GDAL_CACHEMAX": "64"}
    done = subprocess.run(
        [sys.executable, "-c", probe, *map(str, args), "--json-progress"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
    )
    return int(done.stdout.splitlines()[-1]) / 1024


@pytest.mark.slow
def test_a_raster_of_625_million_pixels_is_measured_in_bounded_memory(tmp_path):
    """25,000 x 25,000 px (625 MB as bytes, 2.5 GB as the int32 a whole read would take): class areas, the
    accuracy against a copy of itself and a stratified sample, each in a process whose peak memory stays a
    fraction of the raster (about 280 MiB, 110 of them the imports)."""

    tile = class_raster(tmp_path / "tile.tif", np.tile(blocks(), (25, 20)))  # 1000 x 1000
    big = tmp_path / "big.vrt"
    tiled_vrt(big, tile, 25, 1000)
    copy = tmp_path / "copy.vrt"
    copy.write_text(big.read_text())
    peaks = [peak_mib("areas", big, "-o", tmp_path / "a.csv", "--no-chart")]
    rows = {r["name"]: r for r in json.loads((tmp_path / "a.json").read_text())["rows"]}
    assert rows["nodata"]["pixels"] == 625 * 500 * 25 and rows["Building"]["pixels"] == 625 * 500 * 154
    assert sum(r["pixels"] for r in rows.values()) == 25_000 * 25_000
    peaks.append(peak_mib("accuracy", big, copy, "-o", tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overall_accuracy"] == 1.0 and report["samples"] == 25_000 * 25_000 - 625 * 500 * 25
    peaks.append(peak_mib("sample-points", big, "-o", tmp_path / "points.gpkg", "-n", "30", "--stratified"))
    assert len(features(tmp_path / "points.gpkg")) == 30
    assert max(peaks) < 400, f"peak RSS {peaks} MiB"


@pytest.mark.slow
def test_polygons_and_change_of_a_raster_of_400_million_pixels_stay_in_bounded_memory(tmp_path):
    """20,000 x 20,000 px of Land with one Vegetation square per 1000-px tile: vectorize (400 squares in one Land
    polygon with 400 holes) and change against a copy whose squares turned Building, each in a process whose
    peak memory stays a fraction of the raster (a whole read would take 1.6 GB as int32)."""

    land = np.ones((1000, 1000), np.uint8)
    land[100:200, 300:400] = VEGETATION
    built = land.copy()
    built[100:200, 300:400] = BUILDING
    before, after = tmp_path / "before.vrt", tmp_path / "after.vrt"
    tiled_vrt(before, class_raster(tmp_path / "land.tif", land), 20, 1000)
    tiled_vrt(after, class_raster(tmp_path / "built.tif", built), 20, 1000)
    peaks = [peak_mib("vectorize", before, "-o", tmp_path / "p.gpkg")]
    polygons = features(tmp_path / "p.gpkg")
    assert sorted(f["name"] for f in polygons) == ["Land"] + ["Vegetation"] * 400
    assert sum(f["area_m2"] for f in polygons if f["name"] == "Vegetation") == pytest.approx(400 * 100 * 100 * 4.0)
    assert [f["area_m2"] for f in polygons if f["name"] == "Land"] == [pytest.approx((20_000**2 - 400 * 100**2) * 4.0)]
    peaks.append(peak_mib("change", before, after, "-o", tmp_path / "c.tif"))
    with rasterio.open(tmp_path / "c.tif") as change:
        assert (change.width, change.height) == (20_000, 20_000)
    report = json.loads((tmp_path / "c.matrix.json").read_text())
    assert report["changed_m2"] == 400 * 100 * 100 * 4.0  # every Vegetation square became Building
    assert max(peaks) < 400, f"peak RSS {peaks} MiB"


@pytest.mark.parametrize(
    "command",
    [
        ["areas", "-o", "a.csv"],
        ["vectorize", "-o", "p.gpkg"],
        ["change", "BIG", "-o", "c.tif"],
        ["accuracy", "BIG", "-o", "r.json"],
    ],
)
def test_sigterm_cancels_a_long_analysis_leaving_nothing_behind(tmp_path, command):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    tile = class_raster(tmp_path / "tile.tif", np.tile(blocks(), (25, 20)))
    big = tmp_path / "big.vrt"
    tiled_vrt(big, tile, 25, 1000)
    before = sorted(p.name for p in tmp_path.iterdir())
    repo = Path(__file__).resolve().parents[1]
    args = [str(big) if a == "BIG" else str(tmp_path / a) if "." in a else a for a in command[1:]]
    command = [sys.executable, "-m", "backend.cli", command[0], str(big), *args, "--json-progress"]
    env = {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo, env=env)
    for line in child.stdout:
        if json.loads(line)["type"] == "progress":
            break
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=30)
    assert child.returncode == 130
    assert json.loads(rest.splitlines()[-1])["exit_code"] == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == before
