"""The plugin's settings (QgsSettings under ``crossearth/``) and the backend configuration they imply."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from qgis.core import QgsSettings

from qgis_crossearth import paths
from qgis_crossearth.runner import IN_PROCESS, SUBPROCESS, BackendConfig

PREFIX = "crossearth/"
DEVICES = ("auto", "cpu", "cuda")
RUN_MODES = (SUBPROCESS, IN_PROCESS)


@dataclass
class PluginSettings:
    """Empty paths mean "the default for this installation" (see :mod:`qgis_crossearth.paths`)."""

    python: str = ""
    device: str = "auto"
    threads: int = 0
    model_folder: str = ""
    run_mode: str = SUBPROCESS
    output_folder: str = ""

    @property
    def effective_python(self) -> str:
        return self.python or paths.default_python()

    @property
    def effective_model_folder(self) -> Path:
        return Path(self.model_folder) if self.model_folder else paths.default_model_folder()

    @property
    def effective_output_folder(self) -> Path:
        return Path(self.output_folder) if self.output_folder else Path.home() / "CrossEarth"


def load_settings() -> PluginSettings:
    stored = QgsSettings()
    values = {}
    for spec in fields(PluginSettings):
        default = spec.default
        value = stored.value(PREFIX + spec.name, default)
        values[spec.name] = int(value) if isinstance(default, int) else str(value)
    settings = PluginSettings(**values)
    if settings.device not in DEVICES:
        settings.device = "auto"
    if settings.run_mode not in RUN_MODES:
        settings.run_mode = SUBPROCESS
    return settings


def save_settings(settings: PluginSettings) -> None:
    stored = QgsSettings()
    for spec in fields(PluginSettings):
        stored.setValue(PREFIX + spec.name, getattr(settings, spec.name))


def backend_config(settings: PluginSettings) -> BackendConfig:
    """The device also goes to the backend as ``--device``; "cpu" additionally hides the GPUs from it."""
    extra_env = {"CUDA_VISIBLE_DEVICES": ""} if settings.device == "cpu" else {}
    return BackendConfig(
        python=settings.effective_python,
        root=paths.backend_root(),
        mode=settings.run_mode,
        extra_env=extra_env,
    )
