"""``qgis_process.bin run crossearth:segment``: the provider outside the desktop, from a shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qgis_crossearth.paths import REPO_ROOT

pytestmark = [
    pytest.mark.qgis,
    pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="QGIS's qgis_process.bin is not installed"),
]


def test_qgis_process_runs_segment(plugin_settings, scene, tmp_path):
    profile = tmp_path / "profile"
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(
        "[PythonPlugins]\nqgis_crossearth=true\n\n"
        f"[crossearth]\npython={plugin_settings.python}\nmodel_folder={plugin_settings.model_folder}\nthreads=1\n",
        encoding="utf-8",
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(REPO_ROOT),
           "QGIS_CUSTOM_CONFIG_PATH": str(profile)}
    out = tmp_path / "classes.tif"
    completed = subprocess.run(
        ["qgis_process.bin", "--json", "run", "crossearth:segment", "--",
         f"INPUT={scene}", "ENGINE=torch", f"OUTPUT={out}"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(completed.stdout[completed.stdout.index("{"):])["results"]
    assert Path(results["OUTPUT"]) == out and out.is_file()
