"""QGIS desktop on a virtual screen: the plugin loads, the dock runs on the sample scene, layers appear."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qgis"))
from plugin_data import TINY_CLASSES, write_tiny_model
from run_desktop import REPO, run

pytestmark = [
    pytest.mark.desktop,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    pytest.mark.skipif(
        not (shutil.which("xvfb-run") and shutil.which("qgis") and shutil.which("import")),
        reason="needs xvfb-run, qgis and imagemagick's import",
    ),
]
SAMPLE = REPO / "resources" / "samples" / "dubai_tile6.tif"


def test_dock_run_on_the_sample_scene_shows_styled_layers(tmp_path):
    """The tiny random model keeps this quick; `make screenshot` uses the real default model."""
    write_tiny_model(tmp_path / "models")
    screenshot = tmp_path / "dock.png"
    status = run(SAMPLE, screenshot, str(tmp_path / "models"), steps=2, timeout=600)
    assert status["status"] == "success", status
    assert status["layers"] == ["dubai_tile6 confidence", "dubai_tile6 classes"]
    with rasterio.open(screenshot) as png:
        assert (png.width, png.height) == (1600, 1000)
        pixels = np.moveaxis(png.read()[:3], 0, -1).reshape(-1, 3)
    colours = {tuple(int(c["color"][i : i + 2], 16) for i in (1, 3, 5)) for c in TINY_CLASSES}
    on_screen = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert colours <= on_screen, "the class layer is not drawn in the model card's colours"
