"""The "Check environment" report, against this test run's real Python and broken set-ups."""

from __future__ import annotations

import sys
from pathlib import Path

from qgis_crossearth import paths
from qgis_crossearth.environment import check_environment
from qgis_crossearth.runner import BackendConfig


def test_the_project_venv_is_ready(model_folder):
    report = check_environment(
        BackendConfig(python=sys.executable, root=paths.REPO_ROOT), paths.requirements_file(), model_folder
    )
    assert report.ok, report.as_text()
    text = report.as_text()
    for name in ("torch", "timm", "rasterio"):
        assert f"{name} " in text
    assert "Backend 0." in text and "tiny-test" in text


def test_missing_python_says_how_to_create_one(model_folder, tmp_path):
    report = check_environment(
        BackendConfig(python=str(tmp_path / "nope"), root=paths.REPO_ROOT), paths.requirements_file(), model_folder
    )
    assert not report.ok
    fix = report.findings[-1].fix
    assert "Set up the backend" in fix and "python3 -m qgis_crossearth.backend_setup" in fix
    assert "make setup" in fix  # a checkout's own way; an installed ZIP is not told to run it
    assert "~" not in fix  # nothing that a shell would not expand when pasted


def test_python_without_packages_gets_the_pip_line(model_folder, tmp_path):
    """Debian's bare interpreter (no venv) lacks torch and timm: the fix names that very interpreter."""
    bare = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib = tmp_path / "lib"
    (lib / "backend").mkdir(parents=True)
    report = check_environment(BackendConfig(python=str(bare), root=lib), lib / "requirements.txt", tmp_path)
    missing = next(f for f in report.findings if f.text.startswith("Missing packages"))
    assert "timm" in missing.text
    assert missing.fix == f"install them: {bare} -m pip install -r {lib / 'requirements.txt'}"
    assert any(f.text.startswith("No model found") for f in report.findings)
