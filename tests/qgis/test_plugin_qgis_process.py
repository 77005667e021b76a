"""``qgis_process.bin run crossearth:segment``: the provider outside the desktop, from a shell."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from plugin_data import run_qgis_process

from qgis_crossearth.paths import REPO_ROOT

pytestmark = [
    pytest.mark.qgis,
    pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="QGIS's qgis_process.bin is not installed"),
]


def test_qgis_process_runs_segment(plugin_settings, scene, tmp_path):
    out = tmp_path / "classes.tif"
    settings = {"python": plugin_settings.python, "model_folder": plugin_settings.model_folder, "threads": "1"}
    completed = run_qgis_process(
        REPO_ROOT,
        tmp_path / "profile",
        settings,
        ["run", "crossearth:segment", "--", f"INPUT={scene}", "ENGINE=torch", f"OUTPUT={out}"],
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(completed.stdout[completed.stdout.index("{") :])["results"]
    assert Path(results["OUTPUT"]) == out and out.is_file()
