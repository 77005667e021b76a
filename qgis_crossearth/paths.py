"""Where the plugin finds the backend's code, its Python, its models and the plugin's icons.

Two layouts are supported: the repository checkout (the plugin folder sits beside ``backend/``
and ``.venv/``) and the installed ZIP (the backend's source is bundled in ``lib/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
REPO_ROOT = PLUGIN_DIR.parent
BUNDLED_LIB = PLUGIN_DIR / "lib"


def is_checkout() -> bool:
    """The plugin runs from the repository (beside ``backend/``), not from an installed ZIP."""
    return (REPO_ROOT / "backend" / "cli.py").is_file()


def backend_root() -> Path:
    """The folder to put on ``PYTHONPATH`` so that ``import backend`` finds the matching backend."""
    if is_checkout():
        return REPO_ROOT
    return BUNDLED_LIB


def ensure_backend_importable() -> None:
    """Put the backend's root first on ``sys.path``: the plugin imports ``backend.contract`` (its jobs,
    defaults and exit codes; torch-free) from the backend it runs, the checkout's or the ZIP's ``lib/``."""
    root = str(backend_root())
    if root not in sys.path:
        sys.path.insert(0, root)


def requirements_file() -> Path:
    """The backend's runtime requirements: ``requirements-runtime.txt`` in the checkout, ``lib/requirements.txt``
    (the same file) in the ZIP; neither holds the test or lint packages."""
    root = backend_root()
    runtime = root / "requirements-runtime.txt"
    return runtime if runtime.is_file() else root / "requirements.txt"


def default_python() -> str:
    """The checkout's ``.venv`` if there is one, else the environment *Set up the backend* made once it is
    ready (:mod:`qgis_crossearth.backend_setup`), else '' (not some ``python3`` on PATH that lacks the packages)."""
    from qgis_crossearth.backend_setup import ready_python

    venv = REPO_ROOT / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if venv.is_file():
        return str(venv)
    return ready_python()


def default_model_folder() -> Path:
    """The backend's own registry folder: ``resources/models`` beside ``backend/`` (checkout or ``lib/``)."""
    return backend_root() / "resources" / "models"


def icon_path(name: str) -> str:
    return str(PLUGIN_DIR / "icons" / name)
