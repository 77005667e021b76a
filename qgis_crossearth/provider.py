"""The ``crossearth`` Processing provider."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from qgis_crossearth import paths
from qgis_crossearth.algorithms import ALGORITHMS, ANALYSIS_ALGORITHMS
from qgis_crossearth.model_cards import list_model_cards
from qgis_crossearth.settings import load_settings


class CrossEarthProvider(QgsProcessingProvider):
    """Its algorithms offer the models found in the model folder; ``refreshAlgorithms()`` after changing it."""

    def id(self) -> str:
        return "crossearth"

    def name(self) -> str:
        return "CrossEarth"

    def longName(self) -> str:
        return "CrossEarth: adapt a segmentation model to your scene"

    def icon(self) -> QIcon:
        return QIcon(paths.icon_path("crossearth.svg"))

    def svgIconPath(self) -> str:
        return paths.icon_path("crossearth.svg")

    def loadAlgorithms(self) -> None:
        cards = list_model_cards(load_settings().effective_model_folder)
        for algorithm in (*ALGORITHMS, *ANALYSIS_ALGORITHMS):
            self.addAlgorithm(algorithm(cards))

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]
