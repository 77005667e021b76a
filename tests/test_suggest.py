"""Where to label next: the most uncertain boxes, spread over the scene and its classes, as a GeoPackage."""

from __future__ import annotations

import numpy as np
import pytest

from backend.cli import run_in_process
from backend.suggest import choose_spots
from tests import conftest_rasters as rasters


def test_spots_go_to_the_most_uncertain_cells_spaced_apart_and_round_the_classes():
    uncertainty = np.array(
        [
            [0.9, 0.8, 0.1, 0.2],
            [0.7, 0.6, 0.1, 0.3],
            [0.1, 0.1, 0.1, 0.5],
        ]
    )
    labels = np.array(
        [
            [0, 0, 0, 1],
            [0, 0, 0, 1],
            [0, 0, 0, 1],
        ]
    )
    # class 0 first (its 0.9), then class 1's most uncertain (0.5) though class 0 has a 0.8, then class 0 again
    # where it is 2 cells from both: its 0.8, 0.7 and 0.6 are too near (0, 0), so the first of its 0.1 that is not
    assert choose_spots(uncertainty, labels, 3, spacing=2.0) == [(0, 0), (2, 3), (0, 2)]
    assert choose_spots(uncertainty, labels, 2, spacing=1.0) == [(0, 0), (2, 3)]


def test_cells_outside_the_scene_are_never_suggested_and_a_full_grid_stops_early():
    uncertainty = np.array([[np.nan, 0.2], [0.9, np.nan]])
    labels = np.zeros((2, 2), int)
    assert choose_spots(uncertainty, labels, 5, spacing=1.0) == [(1, 0), (0, 1)]


def test_suggest_labels_writes_ranked_boxes_inside_the_scene_with_the_predicted_class(tmp_path, tiny_model_folder):
    from osgeo import ogr

    scene = rasters.rgb_uint8(tmp_path, height=96, width=128, name="scene.tif")
    out = tmp_path / "spots.gpkg"
    events: list[dict] = []
    argv = ["suggest-labels", scene, "-o", out, "-n", "5", "--box", "16", "--model", tiny_model_folder]
    assert run_in_process([str(a) for a in argv], events.append, lambda: False) == 0, events
    source = ogr.Open(str(out))
    layer = source.GetLayer(0)
    features = [
        (f.GetField("rank"), f.GetField("predicted"), f.GetField("uncertainty"), f.GetGeometryRef().GetEnvelope())
        for f in layer
    ]
    layer = None
    source = None
    assert [rank for rank, *_ in features] == [1, 2, 3, 4, 5]
    assert {name for _, name, *_ in features} <= {"Building", "Land", "Road", "Vegetation", "Water"}
    for _, _, uncertainty, (xmin, xmax, ymin, ymax) in features:
        assert 0.0 <= uncertainty <= 1.0
        assert (xmax - xmin, ymax - ymin) == pytest.approx((32.0, 32.0))  # 16 px of 2 m
        assert 300000.0 <= xmin < xmax <= 300000.0 + 256.0
        assert 2800000.0 - 192.0 <= ymin < ymax <= 2800000.0


def test_suggest_labels_refuses_zero_spots_and_writes_nothing(tmp_path, tiny_model_folder):
    scene = rasters.rgb_uint8(tmp_path, name="scene.tif")
    events: list[dict] = []
    argv = ["suggest-labels", scene, "-o", tmp_path / "s.gpkg", "-n", "0", "--model", tiny_model_folder]
    assert run_in_process([str(a) for a in argv], events.append, lambda: False) == 2
    assert events[-1]["message"] == "count (-n) 0: expected a whole number >= 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
