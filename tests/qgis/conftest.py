"""Fixtures of the plugin tests: the tiny model's folder, plugin settings, the provider, scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from plugin_data import write_labels, write_scene, write_tiny_model


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_tiny_model(folder)
    return folder


@pytest.fixture(scope="session")
def plugin_settings(qgis_app, model_folder: Path):
    """The backend is this test run's Python; one thread keeps the shared machine usable.

    Tests run the backend in-process (torch is imported once, not per run); the tests of the default
    subprocess mode ask for ``subprocess_mode``.
    """
    from qgis_crossearth.runner import IN_PROCESS
    from qgis_crossearth.settings import PluginSettings, save_settings

    settings = PluginSettings(
        python=sys.executable, model_folder=str(model_folder), threads=1, device="cpu", run_mode=IN_PROCESS
    )
    save_settings(settings)
    return settings


@pytest.fixture
def subprocess_mode(plugin_settings):
    """Run the backend as ``python -m backend.cli`` for this test, as the plugin does by default."""
    from dataclasses import replace

    from qgis_crossearth.runner import SUBPROCESS
    from qgis_crossearth.settings import save_settings

    save_settings(replace(plugin_settings, run_mode=SUBPROCESS))
    yield
    save_settings(plugin_settings)


@pytest.fixture(scope="session")
def crossearth_provider(qgis_processing, plugin_settings):
    from qgis.core import QgsApplication

    from qgis_crossearth.provider import CrossEarthProvider

    provider = CrossEarthProvider()
    assert QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider("crossearth")  # by id: a test may have replaced it


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_scene(tmp_path / "scene.tif")


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    return write_labels(tmp_path / "labels.tif")
