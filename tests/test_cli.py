"""The `crossearth` CLI as users and the QGIS plugin run it: outputs, JSON events, exit codes, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.cli import run_in_process
from tests import conftest_rasters as rasters

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> tuple[int, list[dict]]:
    events: list[dict] = []
    code = run_in_process([str(a) for a in argv], events.append, lambda: False)
    return code, events


@pytest.fixture
def scene(tmp_path) -> Path:
    return rasters.rgb_uint8(tmp_path, height=90, width=120, name="scene.tif")


def model_args(folder: Path) -> list[str]:
    return ["--model", str(folder), "--engine", "torch"]


def test_segment_writes_a_georeferenced_class_raster_and_reports_progress(tmp_path, scene, tiny_model_folder):
    out = tmp_path / "classes.tif"
    code, events = run(
        ["segment", scene, "-o", out, "--confidence", tmp_path / "conf.tif", *model_args(tiny_model_folder)]
    )
    assert code == 0, events
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = [e for e in events if e["type"] == "result"]
    assert result[0]["outputs"] == {"OUTPUT": str(out), "CONFIDENCE": str(tmp_path / "conf.tif")}
    with rasterio.open(scene) as source, rasterio.open(out) as written:
        assert (written.width, written.height, written.crs) == (source.width, source.height, source.crs)
        assert written.transform == source.transform
        assert set(np.unique(written.read(1))) <= {0, 1, 2, 3, 4}


def test_adapt_segment_writes_adapter_and_report_beside_the_output(tmp_path, scene, tiny_model_folder):
    out = tmp_path / "classes.tif"
    code, events = run(
        ["adapt-segment", scene, "-o", out, "--steps", "3", "--samples", "2", *model_args(tiny_model_folder)]
    )
    assert code == 0, events
    outputs = next(e for e in events if e["type"] == "result")["outputs"]
    assert outputs["ADAPTER"] == str(tmp_path / "classes.adapter.safetensors")
    assert outputs["REPORT"] == str(tmp_path / "classes.selection.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classes.adapter.safetensors",
        "classes.selection.json",
        "classes.selection.png",
        "classes.tif",
        "classes.tif.aux.xml",
        "scene.tif",
    ]


def test_segment_with_a_saved_adapter_and_evaluate_against_labels(tmp_path, scene, tiny_model_folder):
    adapter = tmp_path / "a.safetensors"
    assert (
        run(["adapt", scene, "--adapter-out", adapter, "--steps", "2", "--samples", "2", "--model", tiny_model_folder])[
            0
        ]
        == 0
    )
    out = tmp_path / "classes.tif"
    assert run(["segment", scene, "-o", out, "--adapter", adapter, *model_args(tiny_model_folder)])[0] == 0
    with rasterio.open(out) as classes:
        profile, predicted = classes.profile, classes.read(1)
    profile.update(count=1)
    labels = tmp_path / "labels.tif"
    with rasterio.open(labels, "w", **profile) as dst:
        dst.write(np.where(np.arange(predicted.shape[1]) < 60, predicted, (predicted + 1) % 5).astype(np.uint8)[None])
    code, events = run(["evaluate", out, labels, "--model", tiny_model_folder, "--json-out", tmp_path / "s.json"])
    assert code == 0, events
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["overall_accuracy"] == pytest.approx(0.5, abs=0.01)


def bad_input_cases(tmp_path: Path, scene: Path) -> dict[str, tuple[list, str]]:
    outside = rasters.write_vector(tmp_path / "far.gpkg", ["POLYGON ((0 0, 1 0, 1 1, 0 0))"], 32640)
    empty = rasters.write_raster(tmp_path / "empty.tif", np.zeros((3, 30, 30), np.uint8), nodata=0)
    other_size = rasters.write_raster(tmp_path / "small_labels.tif", np.zeros((1, 10, 10), np.uint8))
    existing = tmp_path / "exists.tif"
    existing.write_text("keep")
    return {
        "missing file": (["segment", tmp_path / "nope.tif", "-o", tmp_path / "o.tif"], "nope.tif"),
        "not a raster": (["segment", rasters.text_named_tif(tmp_path), "-o", tmp_path / "o.tif"], "notes.tif"),
        "truncated": (["segment", rasters.truncated(tmp_path), "-o", tmp_path / "o.tif"], "truncated.tif"),
        "too few bands": (["segment", scene, "-o", tmp_path / "o.tif", "--bands", "1,2,5"], "scene.tif"),
        "roi outside": (["segment", scene, "-o", tmp_path / "o.tif", "--bbox", "0,0,10,10"], "scene.tif"),
        "bbox in the wrong crs": (
            [
                "segment",
                scene,
                "-o",
                tmp_path / "o.tif",
                "--bbox",
                "300000,2799820,300240,2800000",
                "--bbox-crs",
                "EPSG:4326",
            ],
            "scene.tif",
        ),
        "roi empty": (["segment", scene, "-o", tmp_path / "o.tif", "--bbox", "5,5,5,5"], "scene.tif"),
        "roi unreadable": (
            ["segment", scene, "-o", tmp_path / "o.tif", "--roi", rasters.text_named_tif(tmp_path)],
            "notes.tif",
        ),
        "roi polygons elsewhere": (
            ["segment", scene, "-o", tmp_path / "o.tif", "--roi", outside],
            "outside the raster",
        ),
        "all nodata": (["segment", empty, "-o", tmp_path / "o.tif"], "empty.tif"),
        "unwritable": (["segment", scene, "-o", tmp_path / "no" / "dir" / "o.tif"], "o.tif"),
        "output exists": (["segment", scene, "-o", existing], "exists"),
        "stride wider than the tile": (["segment", scene, "-o", tmp_path / "o.tif", "--stride", "100"], "stride 100"),
        "stride wider than the tile (adapt-segment)": (
            ["adapt-segment", scene, "-o", tmp_path / "o.tif", "--tile-size", "32", "--stride", "40"],
            "stride 40: must lie in 1..32",
        ),
        "unknown blend": (["segment", scene, "-o", tmp_path / "o.tif", "--blend", "middle"], "blend 'middle'"),
        "device this machine lacks": (["segment", scene, "-o", tmp_path / "o.tif", "--device", "cuda:7"], "cuda:7"),
        "labels other size (evaluate)": (["evaluate", scene, other_size], "small_labels.tif"),
        "labels other size (dg)": (
            ["adapt", scene, "--adapter-out", tmp_path / "a.safetensors", "--mode", "dg", "--labels", other_size],
            "small_labels.tif",
        ),
        "labels unreadable": (
            ["adapt-segment", scene, "-o", tmp_path / "o.tif", "--labels", rasters.text_named_tif(tmp_path, "l.gpkg")],
            "l.gpkg: neither a class raster nor a vector file",
        ),
        "dg without labels": (["adapt", scene, "--adapter-out", tmp_path / "a.safetensors", "--mode", "dg"], "labels"),
        "top-k not a whole count": (["adapt-segment", scene, "-o", tmp_path / "o.tif", "--top-k", "2.5"], "top-k 2.5"),
        "top-k zero": (["adapt-segment", scene, "-o", tmp_path / "o.tif", "--top-k", "0"], "top-k 0"),
        "unknown engine": (["segment", scene, "-o", tmp_path / "o.tif", "--engine", "tensorrt"], "tensorrt"),
        "unknown precision": (["segment", scene, "-o", tmp_path / "o.tif", "--precision", "fp16"], "fp16"),
        "int8 on torch": (
            ["segment", scene, "-o", tmp_path / "o.tif", "--engine", "torch", "--precision", "int8"],
            "only the onnx engine runs int8",
        ),
    }


def test_every_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, scene, tiny_model_folder):
    cases = bad_input_cases(tmp_path, scene)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name, (argv, must_mention) in cases.items():
        code, events = run([*argv, "--model", tiny_model_folder])
        errors = [e for e in events if e["type"] == "error"]
        assert code == 2, (name, events)
        assert len(errors) == 1 and "\n" not in errors[0]["message"], (name, errors)
        assert must_mention in errors[0]["message"], (name, errors[0]["message"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "exists.tif").read_text() == "keep"


def test_bad_input_from_the_command_line_prints_one_error_line_and_no_progress_bar(tmp_path):
    command = [sys.executable, "-m", "backend.cli", "adapt-segment", rasters.text_named_tif(tmp_path)]
    result = subprocess.run([*command, "-o", str(tmp_path / "o.tif")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "notes.tif" in result.stderr and result.stdout == ""


def test_a_raster_smaller_than_one_tile_is_padded_and_segmented(tmp_path, tiny_model_folder):
    small = rasters.rgb_uint8(tmp_path, height=20, width=30, name="small.tif")
    code, _ = run(["segment", small, "-o", tmp_path / "o.tif", *model_args(tiny_model_folder)])
    with rasterio.open(tmp_path / "o.tif") as out:
        assert code == 0 and out.shape == (20, 30) and (out.read(1) < 5).all()


def test_help_and_option_parsing_do_not_import_torch():
    probe = "import sys, backend.cli; print(sorted(m for m in ('torch', 'timm', 'rasterio') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_json_progress_subprocess_prints_only_json_lines_and_sigterm_cancels_cleanly(tmp_path, tiny_model_folder):
    scene = rasters.rgb_uint8(tmp_path, height=256, width=256, name="scene.tif")
    command = [sys.executable, "-m", "backend.cli", "adapt-segment", str(scene), "-o", str(tmp_path / "o.tif")]
    command += ["--model", str(tiny_model_folder), "--steps", "100000", "--json-progress"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines = []
    for line in child.stdout:
        lines.append(json.loads(line))  # every stdout line is JSON
        if lines[-1]["type"] == "progress" and lines[-1]["message"].startswith("step "):
            break
    cancelled_at = time.monotonic()
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=30)
    assert time.monotonic() - cancelled_at < 2.0
    events = lines + [json.loads(line) for line in rest.splitlines()]
    assert child.returncode == 130
    assert events[-1] == {"type": "error", "message": "cancelled; no output was written", "exit_code": 130}
    assert sorted(os.listdir(tmp_path)) == ["scene.tif"]


def test_models_lists_the_registry_as_json(tiny_model_folder):
    listing = subprocess.run(
        [sys.executable, "-m", "backend.cli", "models", "--json", "--models-dir", str(tiny_model_folder.parent)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    names = [card["name"] for card in json.loads(listing.stdout)]
    assert "tiny-test-model" in names


def test_inspect_says_whether_the_model_can_take_the_raster(tmp_path, tiny_model_folder):
    raster = rasters.bgrn_uint16(tmp_path)
    shown = subprocess.run(
        [sys.executable, "-m", "backend.cli", "inspect", str(raster), "--json", "--model", str(tiny_model_folder)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    report = json.loads(shown.stdout)
    assert report["count"] == 4 and report["dtypes"] == ["uint16"] * 4 and report["crs"] == "EPSG:32640"
    assert report["band_mapping"] == [3, 2, 1] and report["model_can_take_it"].startswith("yes")


def test_adapt_segment_reports_the_self_check_as_a_log_line_and_in_the_result(tmp_path, scene, tiny_model_folder):
    from backend.adaptation.self_check import verdict_message

    out = tmp_path / "classes.tif"
    code, events = run(
        ["adapt-segment", scene, "-o", out, "--steps", "3", "--samples", "2", *model_args(tiny_model_folder)]
    )
    assert code == 0, events
    check = next(e for e in events if e["type"] == "result")["metrics"]["self_check"]
    assert check["kept"] in ("adapted", "unadapted") and 0.0 <= check["changed"] <= 1.0
    lines = [e["message"] for e in events if e["type"] == "log" and e["message"].startswith("self-check:")]
    assert lines == [verdict_message(check)]
    code, events = run(
        [
            "adapt-segment",
            scene,
            "-o",
            tmp_path / "b.tif",
            "--steps",
            "3",
            "--samples",
            "2",
            "--no-self-check",
            *model_args(tiny_model_folder),
        ]
    )
    assert code == 0 and "self_check" not in next(e for e in events if e["type"] == "result")["metrics"]


def test_a_rejected_adaptation_segments_and_saves_exactly_the_unadapted_model(
    tmp_path, scene, tiny_model_folder, monkeypatch
):
    from backend import jobs
    from backend.adaptation.self_check import Verdict

    monkeypatch.setattr(jobs, "decide", lambda signals: Verdict(False, "forced by the test", signals))
    plain, adapted = tmp_path / "plain.tif", tmp_path / "adapted.tif"
    assert run(["segment", scene, "-o", plain, *model_args(tiny_model_folder)])[0] == 0
    code, events = run(
        ["adapt-segment", scene, "-o", adapted, "--steps", "5", "--samples", "2", *model_args(tiny_model_folder)]
    )
    assert code == 0, events
    warning = [e for e in events if e["type"] == "log" and e["level"] == "warning"]
    assert [e["message"] for e in warning] == [
        "self-check: adaptation did not help (forced by the test); keeping the unadapted model"
    ]
    with rasterio.open(plain) as a, rasterio.open(adapted) as b:
        assert np.array_equal(a.read(1), b.read(1))
    again = tmp_path / "again.tif"
    adapter = tmp_path / "adapted.adapter.safetensors"
    assert run(["segment", scene, "-o", again, "--adapter", adapter, *model_args(tiny_model_folder)])[0] == 0
    with rasterio.open(plain) as a, rasterio.open(again) as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_adapt_segment_trains_on_labelled_polygons_in_another_crs(tmp_path, scene, tiny_model_folder):
    from rasterio.warp import transform as warp_transform

    ring = [(300010.0, 2799990.0), (300060.0, 2799990.0), (300060.0, 2799950.0), (300010.0, 2799950.0)]
    lons, lats = warp_transform("EPSG:32640", "EPSG:4326", *zip(*ring, strict=True))
    wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in [*zip(lons, lats, strict=True), (lons[0], lats[0])])
    labels = rasters.write_labelled_vector(tmp_path / "labels.gpkg", [(wkt + "))", "WATER")], epsg=4326)
    code, events = run(
        [
            "adapt-segment",
            scene,
            "-o",
            tmp_path / "c.tif",
            "--labels",
            labels,
            "--steps",
            "3",
            "--samples",
            "2",
            *model_args(tiny_model_folder),
        ]
    )
    assert code == 0, events
    messages = [e["message"] for e in events if e["type"] == "progress"]
    assert "adapting on 3 tiles (DA, 3 steps)" in messages  # two spread over the scene, one on the polygon


def test_a_label_file_with_a_class_the_model_lacks_is_one_line_of_bad_input(tmp_path, scene, tiny_model_folder):
    labels = rasters.write_labelled_vector(tmp_path / "labels.gpkg", [("POINT (300050 2799950)", "Forest")], 32640)
    code, events = run(
        ["adapt-segment", scene, "-o", tmp_path / "c.tif", "--labels", labels, *model_args(tiny_model_folder)]
    )
    assert code == 2
    assert events[-1]["message"] == (
        f"{labels}: feature 1 has class 'Forest', which the model lacks "
        "(its classes: 0 Building, 1 Land, 2 Road, 3 Vegetation, 4 Water)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gpkg", "scene.tif"]


def labelled_squares(path: Path, per_class: int) -> Path:
    """``per_class`` 8 x 8 px squares of Land and as many of Water over the test scene (2 m pixels, EPSG:32640)."""

    def square(col: int, row: int) -> str:
        x, y = 300000.0 + 2 * col, 2800000.0 - 2 * row
        return f"POLYGON (({x} {y}, {x + 16} {y}, {x + 16} {y - 16}, {x} {y - 16}, {x} {y}))"

    names = ["Land"] * per_class + ["Water"] * per_class
    features = [(square(10 * i, 10 * (i % 3)), name) for i, name in enumerate(names)]
    return rasters.write_labelled_vector(path, features, epsg=32640)


@pytest.mark.parametrize(
    ("per_class", "polygons", "folds"),
    [(6, 4, None), (3, 6, 3)],  # a third held out (two of each class); too few then: every shape once, by folds
)
def test_with_labelled_polygons_the_estimate_on_held_out_polygons_judges_the_adaptation(
    tmp_path, scene, tiny_model_folder, per_class, polygons, folds
):
    labels = labelled_squares(tmp_path / "labels.gpkg", per_class)
    code, events = run(
        [
            "adapt-segment",
            scene,
            "-o",
            tmp_path / "c.tif",
            "--labels",
            labels,
            "--steps",
            "3",
            "--samples",
            "2",
            *model_args(tiny_model_folder),
        ]
    )
    assert code == 0, events
    check = next(e for e in events if e["type"] == "result")["metrics"]["self_check"]
    estimate = check["estimate"]
    assert estimate["polygons"] == polygons and estimate["pixels"] == polygons * 64  # squares of 8 x 8 px
    assert estimate.get("folds") == folds
    before, after = estimate["before"]["miou"], estimate["after"]["miou"]
    assert check["kept"] == ("adapted" if after >= before else "unadapted")
    by_folds = f" ({folds} folds)" if folds else ""
    assert check["reason"] == f"on {polygons} held-out polygons{by_folds} mIoU {100 * before:.1f} -> {100 * after:.1f}"
    lines = [e["message"] for e in events if e["type"] == "log"]
    heading = f"held-out polygons ({polygons}{f', {folds} folds' if folds else ''}, {polygons * 64} pixels) IoU: "
    assert any(line.startswith(heading) for line in lines)
    messages = [e["message"] for e in events if e["type"] == "progress"]
    assert ("self-check: adapting without fold 3/3" in messages) == bool(folds)
    report = json.loads((tmp_path / "c.selection.json").read_text())
    assert report["self_check"]["estimate"] == estimate and report["selections"]


def test_without_the_self_check_every_polygon_trains_and_none_is_held_out(tmp_path, scene, tiny_model_folder):
    from backend import jobs

    options = jobs.AdaptOptions(labels=str(labelled_squares(tmp_path / "labels.gpkg", 6)), samples=2, self_check=False)
    on_scene = jobs.Scene(input=str(scene), model=str(tiny_model_folder))
    tiles = jobs.scene_samples(on_scene, jobs.open_model(on_scene)[0], options)
    assert tiles.held_out == [] and tiles.folds == []
    code, events = run(
        ["adapt-segment", scene, "-o", tmp_path / "c.tif", "--labels", options.labels, "--steps", "3",
         "--samples", "2", "--no-self-check", *model_args(tiny_model_folder)]
    )  # fmt: skip
    assert code == 0, events
    assert "self_check" not in next(e for e in events if e["type"] == "result")["metrics"]
    messages = [e["message"] for e in events if e["type"] in ("log", "progress")]
    assert not [m for m in messages if "held-out" in m or m.startswith("self-check")]


def test_evaluate_skips_the_pixels_of_the_shapes_it_is_given(tmp_path, tiny_model_folder):
    truth = np.zeros((1, 40, 48), np.uint8)
    truth[0, :, 24:] = 1
    prediction = truth.copy()
    prediction[0, 0:10, 0:10] = 1  # 100 wrong pixels in the top-left corner
    labels = rasters.write_raster(tmp_path / "labels.tif", truth)
    classes = rasters.write_raster(tmp_path / "classes.tif", prediction)
    corner = "POLYGON ((300000 2800000, 300020 2800000, 300020 2799980, 300000 2799980, 300000 2800000))"
    skip = rasters.write_labelled_vector(tmp_path / "trained.gpkg", [(corner, "Building")], epsg=32640)
    scored = {}
    for name, extra in (("all", []), ("skipped", ["--skip", skip])):
        code, events = run(["evaluate", classes, labels, "--model", tiny_model_folder, *extra])
        assert code == 0, events
        scored[name] = next(e for e in events if e["type"] == "result")["metrics"]
    assert scored["all"]["pixels"] == 40 * 48 and scored["skipped"]["pixels"] == 40 * 48 - 100
    assert scored["all"]["overall_accuracy"] == pytest.approx(1 - 100 / (40 * 48))
    assert scored["skipped"]["overall_accuracy"] == 1.0
