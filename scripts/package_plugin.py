"""Build the plugin ZIP that QGIS installs with "Install from ZIP" (``make package``).

Layout of the ZIP: ``qgis_crossearth/`` at the root with its code, ``metadata.txt`` and ``icons/``
(symlinks in the checkout, real files here), and ``qgis_crossearth/lib/`` holding the backend's
source, its runtime requirements (``requirements-runtime.txt`` as ``lib/requirements.txt``) and, in
``lib/resources/models`` where the backend's registry looks, the model cards with weights. The backend is
bundled so that the plugin always runs the backend version it was written against: the user only installs
the dependencies (``python -m pip install -r lib/requirements.txt``) into a Python of their choice.
"""

from __future__ import annotations

import argparse
import configparser
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "qgis_crossearth"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def plugin_version() -> str:
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def walk(folder: Path) -> Iterator[Path]:
    """Files below ``folder``, following symlinked folders (``icons/``), without caches."""
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if Path(name).suffix not in SKIP_SUFFIXES:
                yield Path(root) / name


def entries(include_models: bool) -> Iterator[tuple[Path, str]]:
    """(source file, name in the ZIP) pairs."""
    plugin_dir = REPO / PLUGIN
    for path in walk(plugin_dir):
        relative = path.relative_to(plugin_dir)
        if relative.parts[0] != "lib":  # a stale lib/ from an extracted ZIP is never packed
            yield path, f"{PLUGIN}/{relative.as_posix()}"
    for path in walk(REPO / "backend"):
        if path.suffix == ".py":
            yield path, f"{PLUGIN}/lib/backend/{path.relative_to(REPO / 'backend').as_posix()}"
    yield REPO / "requirements-runtime.txt", f"{PLUGIN}/lib/requirements.txt"  # no training, test or lint packages
    for name in ("LICENSE", "README.md"):
        if (REPO / name).is_file():
            yield REPO / name, f"{PLUGIN}/{name}"
    if include_models:
        models = REPO / "resources" / "models"
        for path in walk(models):
            yield path, f"{PLUGIN}/lib/resources/models/{path.relative_to(models).as_posix()}"


def build(output: Path, include_models: bool = True) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for source, name in entries(include_models):
            archive.write(source, name)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "dist" / f"{PLUGIN}-{plugin_version()}.zip")
    parser.add_argument("--no-models", action="store_true", help="leave the model weights out of the ZIP")
    args = parser.parse_args()
    path = build(args.output, include_models=not args.no_models)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
