"""The backend command lines the plugin builds, and that its defaults are the backend's."""

from __future__ import annotations

import itertools

import pytest

from backend.pipeline import AdaptOptions, SegmentOptions
from qgis_crossearth.commands import (
    Adaptation,
    Scene,
    Segmentation,
    adapt_argv,
    adapt_segment_argv,
    evaluate_argv,
    segment_argv,
)


def test_plugin_defaults_are_the_backends():
    plugin, backend = Adaptation(), AdaptOptions()
    for name in ("mode", "samples", "steps", "top_k", "reselect_every", "seed", "source_samples"):
        assert getattr(plugin, name) == getattr(backend, name), name
    ours, theirs = Segmentation(output=""), SegmentOptions(output="")
    assert (ours.batch_size, ours.engine) == (theirs.batch_size, theirs.engine)


def test_segment_argv_passes_only_what_was_chosen():
    scene = Scene(raster="/d/scene.tif", model="/m/tiny")
    argv = segment_argv(scene, Segmentation(output="/d/out.tif"))
    assert argv == [
        "segment",
        "/d/scene.tif",
        "--model",
        "/m/tiny",
        "-o",
        "/d/out.tif",
        "--batch-size",
        "4",
        "--json-progress",
        "--overwrite",
    ]


def test_every_option_reaches_the_command_line():
    scene = Scene(
        raster="/d/s.tif",
        model="/m/tiny",
        bands=[3, 2, 1],
        bbox=(1.0, 2.0, 3.5, 4.0),
        bbox_crs="EPSG:4326",
        roi="/d/roi.gpkg",
        threads=2,
    )
    adaptation = Adaptation(
        mode="dg",
        labels="/d/l.tif",
        samples=8,
        steps=5,
        top_k=6,
        reselect_every=2,
        seed=3,
        source_samples=True,
        adapter_out="/d/a.safetensors",
        report_out="/d/r.json",
    )
    segmentation = Segmentation(
        output="/d/o.tif",
        tile_size=256,
        stride=200,
        batch_size=2,
        confidence="/d/c.tif",
        entropy="/d/e.tif",
        engine="torch",
        device="cuda:1",
        cluster="local:2",
    )
    argv = adapt_segment_argv(scene, adaptation, segmentation)
    pairs = dict(itertools.pairwise(argv))
    assert argv[:2] == ["adapt-segment", "/d/s.tif"]
    assert pairs["--bands"] == "3,2,1" and pairs["--bbox"] == "1.0,2.0,3.5,4.0" and pairs["--bbox-crs"] == "EPSG:4326"
    assert pairs["--roi"] == "/d/roi.gpkg" and pairs["--threads"] == "2"
    assert (pairs["--mode"], pairs["--labels"], pairs["--samples"], pairs["--steps"]) == ("dg", "/d/l.tif", "8", "5")
    assert (pairs["--top-k"], pairs["--reselect-every"], pairs["--seed"]) == ("6", "2", "3")
    assert (pairs["--adapter-out"], pairs["--report-out"]) == ("/d/a.safetensors", "/d/r.json")
    assert "--source-samples" in argv and "--source-samples" not in adapt_argv(scene, Adaptation())
    assert (pairs["-o"], pairs["--tile-size"], pairs["--stride"]) == ("/d/o.tif", "256", "200")
    assert (pairs["--batch-size"], pairs["--engine"], pairs["--device"]) == ("2", "torch", "cuda:1")
    assert (pairs["--confidence"], pairs["--entropy"], pairs["--cluster"]) == ("/d/c.tif", "/d/e.tif", "local:2")
    assert segmentation.outputs() == ["/d/o.tif", "/d/c.tif", "/d/e.tif"]


def test_fractional_top_k_stays_a_fraction():
    argv = adapt_argv(Scene(raster="s.tif", model="m"), Adaptation(top_k=0.25, adapter_out="a.safetensors"))
    assert argv[argv.index("--top-k") + 1] == "0.25"


def test_evaluate_argv_names_the_model():
    assert evaluate_argv("p.tif", "l.tif", "/m/tiny", "m.json")[:7] == [
        "evaluate",
        "p.tif",
        "l.tif",
        "--model",
        "/m/tiny",
        "--json-out",
        "m.json",
    ]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Adaptation(mode="xx")
