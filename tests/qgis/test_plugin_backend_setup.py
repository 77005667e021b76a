"""*Set up the backend*: a virtual environment in the per-user data folder, from a folder of wheels here.

The real requirements (torch and friends, GBs) are not installed by the tests: a one-module wheel stands in for
them; the same code path creates the environment, runs pip with ``--no-index --find-links`` and marks it ready.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qgis_crossearth import backend_setup, paths
from qgis_crossearth.backend_setup import READY_FILE, ready_python, setup_backend, venv_python
from qgis_crossearth.runner import NO_BACKEND_PYTHON, BackendConfig, run_backend

PROBE = "crossearth_probe"


def write_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel: one module and the dist-info pip needs."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        f"{PROBE}.py": "VALUE = 42\n",
        f"{PROBE}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 0.1\n",
        f"{PROBE}-0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(text)},{len(text.encode())}\n" for name, text in files.items())
    files[f"{PROBE}-0.1.dist-info/RECORD"] = record + f"{PROBE}-0.1.dist-info/RECORD,,\n"
    wheel = folder / f"{PROBE}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    write_wheel(folder)
    return folder


@pytest.fixture
def requirements(tmp_path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(f"# stands in for torch, timm, rasterio ...\n{PROBE}\n")
    return path


def test_the_backend_folder_is_per_user_data(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert backend_setup.default_backend_dir() == tmp_path / "data" / "crossearth" / "backend"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert backend_setup.default_backend_dir() == tmp_path / "home" / ".local" / "share" / "crossearth" / "backend"


def test_set_up_from_a_folder_of_wheels_makes_a_ready_environment(wheels, requirements, tmp_path):
    target = tmp_path / "backend"
    steps: list[float] = []
    result = setup_backend(
        requirements, target, str(wheels), lambda f, m: steps.append(f), check_imports=(PROBE,), python=sys.executable
    )
    assert result.ok, result.message
    assert ready_python(target) == str(venv_python(target)) == result.python
    assert (target / READY_FILE).is_file() and steps[-1] == 1.0 and steps == sorted(steps)
    probe = subprocess.run(
        [result.python, "-c", f"import {PROBE}; print({PROBE}.VALUE)"], capture_output=True, text=True, check=True
    )
    assert probe.stdout.strip() == "42"


def test_a_cancelled_set_up_leaves_nothing(wheels, requirements, tmp_path):
    target = tmp_path / "backend"
    reached: list[float] = []
    result = setup_backend(
        requirements,
        target,
        str(wheels),
        lambda fraction, message: reached.append(fraction),
        lambda: bool(reached) and reached[-1] >= 0.05,  # once the environment exists, while pip runs
        check_imports=(PROBE,),
    )
    assert result.cancelled and not result.ok
    assert not target.exists() and ready_python(target) == ""


def test_a_failed_set_up_says_why_in_one_line(requirements, tmp_path):
    result = setup_backend(requirements, tmp_path / "backend", str(tmp_path / "no-wheels"), check_imports=(PROBE,))
    assert not result.ok and "no-wheels" in result.message and "\n" not in result.message
    (tmp_path / "wheels").mkdir()
    result = setup_backend(requirements, tmp_path / "backend", str(tmp_path / "wheels"), check_imports=(PROBE,))
    assert not result.ok and result.message.startswith("set-up failed") and "\n" not in result.message
    assert not (tmp_path / "backend").exists()


def test_the_command_line_runs_from_the_plugins_folder(wheels, requirements, tmp_path):
    target = tmp_path / "backend"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "qgis_crossearth.backend_setup", "--target", str(target)]
    command += ["--requirements", str(requirements), "--find-links", str(wheels)]
    done = subprocess.run(command, cwd=paths.PLUGIN_DIR.parent, env=env, capture_output=True, text=True, check=False)
    # the stand-in wheel is no torch: the final check names what is missing, and nothing is left marked ready
    assert done.returncode == 1 and "set-up failed" in done.stderr, done.stderr
    assert "[  0%] creating the environment" in done.stdout and ready_python(target) == ""


def test_with_no_backend_python_the_plugin_uses_the_set_up_one_or_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "no-checkout")  # an installed ZIP has no .venv beside it
    assert paths.default_python() == ""
    python = venv_python(backend_setup.default_backend_dir())
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert paths.default_python() == ""  # not ready until the set-up completed
    (backend_setup.default_backend_dir() / READY_FILE).write_text("")
    assert paths.default_python() == str(python)

    from backend.contract import Scene, SegmentJob, SegmentOptions

    job = SegmentJob(Scene("s.tif"), SegmentOptions("o.tif"))
    run = run_backend(job, BackendConfig(python="", root=paths.backend_root()), lambda event: None, lambda: False)
    assert not run.ok and run.error == NO_BACKEND_PYTHON and "Set up the backend" in run.error
