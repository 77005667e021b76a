"""Segmentation on a Dask cluster writes exactly what one process writes, survives a killed worker, cancels cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from distributed import Client

from backend.cli import run_in_process
from backend.errors import BadInput
from backend.jobs import Scene, SegmentOptions, options_per_raster, segment, segment_rasters
from backend.progress import Cancelled, no_progress
from backend.segmentation import cluster as cluster_module
from backend.segmentation.cluster import connect, parse_cluster
from tests.conftest_rasters import write_raster


@pytest.fixture(scope="module")
def scheduler() -> str:
    """Two local worker processes shared by the tests that do not kill one."""
    with connect("local:2") as client:
        yield client.scheduler.address


def scene_raster(folder: Path, height: int = 230, width: int = 200, name: str = "scene.tif") -> Path:
    """Noise with a nodata corner: tiles of the toy model (64 px, stride 48) overlap in both directions."""
    data = np.random.default_rng(height + width).integers(0, 256, (3, height, width)).astype(np.uint8)
    valid = np.ones((height, width), bool)
    valid[: height // 4, : width // 3] = False
    return write_raster(folder / name, data, photometric="RGB", mask=valid)


def outputs(folder: Path, stem: str, blend: str | None = None) -> SegmentOptions:
    return SegmentOptions(
        output=str(folder / f"{stem}.tif"),
        confidence=str(folder / f"{stem}_confidence.tif"),
        entropy=str(folder / f"{stem}_entropy.tif"),
        engine="torch",
        blend=blend,
    )


def scene(path: Path, model_folder: Path, threads: int | None = 1) -> Scene:
    return Scene(input=str(path), model=str(model_folder), threads=threads)  # one thread, as each worker has


def read_all(options: SegmentOptions) -> list[np.ndarray]:
    arrays = []
    for path in (options.output, options.confidence, options.entropy):
        with rasterio.open(path) as dataset:
            arrays.append(dataset.read(1))
            georeference = (dataset.crs, dataset.transform, dataset.shape)
    return [*arrays, georeference]


def assert_same_outputs(got: SegmentOptions, expected: SegmentOptions) -> None:
    classes, confidence, entropy, georeference = read_all(got)
    want_classes, want_confidence, want_entropy, want_georeference = read_all(expected)
    assert georeference == want_georeference
    assert np.array_equal(classes, want_classes)
    assert np.array_equal(confidence, want_confidence, equal_nan=True)  # the same float additions, bit for bit
    assert np.array_equal(entropy, want_entropy, equal_nan=True)
    assert (classes == 255).any() and (classes < 5).any()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("local", os.cpu_count()), ("local:3", 3), (" local:1 ", 1), ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786")],
)
def test_cluster_spec_is_a_local_worker_count_or_a_scheduler_address(spec, expected):
    assert parse_cluster(spec) == expected


@pytest.mark.parametrize("spec", ["local:0", "local:two", "local:", ""])
def test_bad_cluster_specs_are_bad_input(spec):
    with pytest.raises(BadInput, match="cluster"):
        parse_cluster(spec)


def count_model_loads() -> None:
    """Runs on each worker: count calls of the registry's model loader from now on."""
    import backend.model.registry as registry

    original = getattr(registry.load_model, "original", registry.load_model)

    def counted(card):
        counted.calls += 1
        return original(card)

    counted.calls, counted.original = 0, original
    registry.load_model = counted


def model_loads() -> int:
    import backend.model.registry as registry

    return registry.load_model.calls


@pytest.mark.parametrize("blend", [None, "centre"])  # the card's (hann) and the kept centres
def test_two_workers_write_exactly_the_single_process_output_loading_the_model_once_each(
    tmp_path, tiny_model_folder, scheduler, blend
):
    path = scene_raster(tmp_path)
    with Client(scheduler) as client:
        client.run(count_model_loads)
        segment(scene(path, tiny_model_folder), options := outputs(tmp_path, "cluster", blend), cluster=scheduler)
        loads = client.run(model_loads)
    segment(scene(path, tiny_model_folder), expected := outputs(tmp_path, "single", blend))
    assert_same_outputs(options, expected)
    assert sorted(loads.values()) == [1, 1]  # 5 strips on 2 workers, one model load each
    with rasterio.open(options.output) as written:
        assert written.tags()["engine"] == "torch"
        assert (written.tags()["BLEND"], written.tags()["STRIDE"]) == (blend or "hann", "48")


def test_several_rasters_flow_through_one_run_each_as_in_a_single_process(
    tmp_path, tiny_model_folder, scheduler, monkeypatch
):
    monkeypatch.setattr("backend.segmentation.sliding_window.PANEL_COLUMNS", 512)  # b.tif goes in three panels
    paths = [scene_raster(tmp_path, 150, 120, "a.tif"), scene_raster(tmp_path, 90, 1100, "b.tif")]
    (tmp_path / "out").mkdir()
    folder = str(tmp_path / "out")
    each = options_per_raster([str(p) for p in paths], SegmentOptions(folder, folder, folder, engine="torch"))
    assert [Path(o.output).name for o in each] == ["a_classes.tif", "b_classes.tif"]
    assert [Path(o.entropy).name for o in each] == ["a_entropy.tif", "b_entropy.tif"]
    reports = []
    results = segment_rasters(
        [scene(p, tiny_model_folder) for p in paths], each, lambda f, m: reports.append(f), cluster=scheduler
    )
    assert [r["OUTPUT"] for r in results] == [o.output for o in each]
    assert reports == sorted(reports) and reports[-1] == 1.0
    # the workers predict the tiles across a panel edge once per panel: so does the single process for the bits to
    # be the same (carried, the tile's probabilities come from another batch, equal to a float rounding)
    monkeypatch.setattr("backend.segmentation.sliding_window.LocalStrips.carries_edges", False)
    for path, options in zip(paths, each, strict=True):
        segment(scene(path, tiny_model_folder), expected := outputs(tmp_path, f"single_{path.stem}"))
        assert_same_outputs(options, expected)


def test_two_runs_at_once_share_a_cluster_without_stepping_on_each_other(tmp_path, tiny_model_folder, scheduler):
    path = scene_raster(tmp_path, height=300)
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(segment, scene(path, tiny_model_folder), outputs(tmp_path, name), cluster=scheduler)
            for name in ("first", "second")
        ]
        for run_ in runs:
            run_.result()  # the run that ends first removes only its own model plugin
    segment(scene(path, tiny_model_folder), expected := outputs(tmp_path, "single"))
    for name in ("first", "second"):
        assert_same_outputs(outputs(tmp_path, name), expected)


def test_a_strip_slower_to_fetch_than_the_cancel_poll_is_fetched_once(
    tmp_path, tiny_model_folder, scheduler, monkeypatch
):
    monkeypatch.setattr(cluster_module, "POLL_SECONDS", 0.001)  # no 3 MB strip crosses a socket that fast
    path = scene_raster(tmp_path, height=100, width=2400)
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            segment, scene(path, tiny_model_folder), options := outputs(tmp_path, "cluster"), no_progress, stop.is_set,
            cluster=scheduler,
        )  # fmt: skip
        try:
            running.result(timeout=60)  # a fetch given up at each poll would never end
        finally:
            stop.set()
    segment(scene(path, tiny_model_folder), expected := outputs(tmp_path, "single"))
    assert_same_outputs(options, expected)


def test_cancel_mid_run_leaves_no_output(tmp_path, tiny_model_folder, scheduler):
    path = scene_raster(tmp_path, height=400)
    out = tmp_path / "out"
    out.mkdir()
    messages = []
    with pytest.raises(Cancelled):
        segment(
            scene(path, tiny_model_folder),
            outputs(out, "classes"),
            lambda fraction, message: messages.append(message),
            lambda: any("strip 2/" in m for m in messages),
            cluster=scheduler,
        )
    assert any("strip 2/" in m for m in messages) and not any("strip 8/" in m for m in messages)
    assert sorted(os.listdir(out)) == []


def test_a_killed_worker_is_replaced_and_the_output_is_still_complete_and_correct(tmp_path, tiny_model_folder):
    path = scene_raster(tmp_path, height=600)  # 13 strips
    killed: dict[str, int] = {}
    with connect("local:2") as client:
        pids = client.run(os.getpid)

        def kill_the_busiest_worker(fraction: float, message: str) -> None:
            if killed or "strip 1/" not in message:
                return
            processing, holding = client.processing(), client.has_what()
            strips = {address: len(processing.get(address, ())) + len(holding.get(address, ())) for address in pids}
            victim = max(strips, key=strips.get)
            killed.update(pid=pids[victim], strips=strips[victim])
            os.kill(pids[victim], signal.SIGKILL)

        segment(
            scene(path, tiny_model_folder),
            options := outputs(tmp_path, "cluster"),
            kill_the_busiest_worker,
            cluster=client.scheduler.address,
        )
        survivors = client.run(os.getpid)
    assert killed["strips"] > 0 and killed["pid"] not in survivors.values()  # it died holding strips
    segment(scene(path, tiny_model_folder), expected := outputs(tmp_path, "single"))
    assert_same_outputs(options, expected)


def run(argv: list) -> tuple[int, list[dict]]:
    events: list[dict] = []
    return run_in_process([str(a) for a in argv], events.append, lambda: False), events


def test_cli_adapt_segment_on_a_cluster_equals_the_single_process_run(tmp_path, tiny_model_folder, scheduler):
    path = scene_raster(tmp_path)
    common = ["--model", tiny_model_folder, "--engine", "torch", "--threads", "1", "--steps", "2", "--samples", "2"]
    for name, extra in [("single", []), ("cluster", ["--cluster", scheduler])]:
        (tmp_path / name).mkdir()
        options = outputs(tmp_path / name, "classes")
        argv = ["adapt-segment", path, "-o", options.output, "--confidence", options.confidence]
        code, events = run([*argv, "--entropy", options.entropy, *common, *extra])
        assert code == 0, events
        assert (tmp_path / name / "classes.adapter.safetensors").is_file()
    assert_same_outputs(outputs(tmp_path / "cluster", "classes"), outputs(tmp_path / "single", "classes"))


def test_cli_several_inputs_write_one_raster_each_into_the_output_folder(tmp_path, tiny_model_folder, scheduler):
    paths = [scene_raster(tmp_path, 100, 80, "a.tif"), scene_raster(tmp_path, 70, 90, "b.tif")]
    out = tmp_path / "out"
    out.mkdir()
    code, events = run(
        ["segment", *paths, "-o", out, "--model", tiny_model_folder, "--engine", "torch", "--cluster", scheduler]
    )
    assert code == 0, events
    result = next(e for e in events if e["type"] == "result")
    assert result["outputs"] == {"OUTPUT": str(out)}
    assert [r["OUTPUT"] for r in result["metrics"]["rasters"]] == [
        str(out / "a_classes.tif"),
        str(out / "b_classes.tif"),
    ]
    assert sorted(p.name for p in out.glob("*.tif")) == ["a_classes.tif", "b_classes.tif"]


def test_an_unreachable_scheduler_is_bad_input_and_writes_nothing(tmp_path, tiny_model_folder, monkeypatch):
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "1s")
    path = scene_raster(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code, events = run(
        ["segment", path, "-o", out / "c.tif", "--model", tiny_model_folder, "--cluster", "tcp://127.0.0.1:9"]
    )
    assert code == 2 and "no Dask scheduler answered" in events[-1]["message"]
    assert os.listdir(out) == []


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may never be collected in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_cli_on_local_workers_reports_progress_and_sigterm_stops_it_and_them_at_once(tmp_path, tiny_model_folder):
    """What the QGIS plugin does: run the CLI with --cluster local:2 and --json-progress, SIGTERM to cancel."""
    path = scene_raster(tmp_path, height=2000, width=300)  # about 120 strips of 16 tiles at stride 16
    command = [sys.executable, "-m", "backend.cli", "segment", str(path), "-o", str(tmp_path / "out" / "c.tif")]
    command += ["--model", str(tiny_model_folder), "--engine", "torch", "--stride", "16", "--cluster", "local:2"]
    (tmp_path / "out").mkdir()
    child = subprocess.Popen([*command, "--json-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    for line in child.stdout:
        events.append(json.loads(line))
        if "strip 2/" in events[-1].get("message", ""):
            break
    workers = [
        int(pid)
        for pid in subprocess.run(["pgrep", "-P", str(child.pid)], capture_output=True, text=True).stdout.split()
    ]
    cancelled_at = time.monotonic()
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=30)
    assert time.monotonic() - cancelled_at < 2.0  # the plugin's grace period before SIGKILL
    events += [json.loads(line) for line in rest.splitlines()]
    assert any("on 2 worker(s)" in e.get("message", "") for e in events)
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 0.5
    assert child.returncode == 130 and events[-1]["message"] == "cancelled; no output was written"
    assert os.listdir(tmp_path / "out") == []
    deadline = time.monotonic() + 3  # the resource tracker leaves once its pipe closes
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) >= 2 and not any(running(pid) for pid in workers)  # no worker outlives the run


def test_several_inputs_without_a_cluster_run_one_after_another_here(tmp_path, tiny_model_folder):
    paths = [scene_raster(tmp_path, 100, 80, "a.tif"), scene_raster(tmp_path, 70, 90, "b.tif")]
    (tmp_path / "out").mkdir()
    code, events = run(
        ["segment", *paths, "-o", tmp_path / "out", "--quicklook", tmp_path / "out", "--model", tiny_model_folder]
    )
    assert code == 0, events
    names = ["a_classes.tif", "a_quicklook.png", "b_classes.tif", "b_quicklook.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.endswith(".aux.xml")) == names
    for path in paths:
        segment(scene(path, tiny_model_folder, threads=None), expected := outputs(tmp_path, f"single_{path.stem}"))
        got = rasterio.open(tmp_path / "out" / f"{path.stem}_classes.tif")
        with got, rasterio.open(expected.output) as want:
            assert np.array_equal(got.read(1), want.read(1))


@pytest.mark.parametrize(
    ("inputs", "output", "problem"),
    [
        (["a.tif", "sub/a.tif"], "out", "same file name"),
        (["a.tif", "b.tif"], "out/x.tif", "must be an existing folder"),
    ],
)
def test_several_inputs_need_distinct_names_and_output_folders(tmp_path, tiny_model_folder, inputs, output, problem):
    (tmp_path / "sub").mkdir()
    (tmp_path / "out").mkdir()
    paths = [scene_raster(tmp_path, 40, 40, name) for name in inputs]
    code, events = run(["segment", *paths, "-o", tmp_path / output, "--model", tiny_model_folder])
    assert code == 2 and problem in events[-1]["message"]
    assert os.listdir(tmp_path / "out") == []


def test_rasters_read_at_another_resolution_stream_through_the_cluster_each_as_in_a_single_process(
    tmp_path, tiny_model_folder, scheduler
):
    """--resolution 1 on 2 m rasters: each one's VRT goes to the workers, and its outputs come back on its grid."""
    paths = [scene_raster(tmp_path, 60, 50, "a.tif"), scene_raster(tmp_path, 40, 70, "b.tif")]
    (tmp_path / "out").mkdir()
    folder = str(tmp_path / "out")
    each = options_per_raster([str(p) for p in paths], SegmentOptions(folder, folder, folder, engine="torch"))
    scenes = [replace(scene(p, tiny_model_folder), resolution="1") for p in paths]
    segment_rasters(scenes, each, cluster=scheduler)
    for path, options, at_1m in zip(paths, each, scenes, strict=True):
        segment(at_1m, expected := outputs(tmp_path, f"single_{path.stem}"))
        assert_same_outputs(options, expected)
        with rasterio.open(path) as source, rasterio.open(options.output) as made:
            assert (made.transform, made.shape) == (source.transform, source.shape)
