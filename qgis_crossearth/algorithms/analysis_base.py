"""What the analysis algorithms (vectorize, class areas, accuracy, sample points, change) share.

They take class rasters rather than scenes and no model: each builds its job of :mod:`backend.contract`
(``build_job``) and runs it through the same runner as ``segment`` (subprocess or in-process).
Outputs load styled: polygons categorized in the classes' colours (the backend's result event names
them), CSV tables as table layers, and PNG pictures shown in the results viewer.
"""

from __future__ import annotations

import html
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsMapLayer,
    QgsMarkerSymbol,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from qgis_crossearth.algorithms.base import CrossEarthAlgorithm


class AnalysisAlgorithm(CrossEarthAlgorithm):
    """Base of the analysis algorithms: raster and vector paths from layers, and loading the results."""

    def group(self) -> str:
        return "Analysis"

    def groupId(self) -> str:
        return "analysis"

    def raster_path(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(f"{parameters.get(name)}: not a raster layer QGIS can read")
        return layer.source()

    def vector_path(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> str:
        """A file the backend (OGR) can read: the layer's own file, or a GeoPackage copy of it."""
        return self.parameterAsCompatibleSourceLayerPath(
            parameters, name, context, ["gpkg", "shp", "geojson"], "gpkg", feedback
        )


def load_table(context: QgsProcessingContext, path: str, name: str, output: str) -> None:
    """Load a CSV as a table layer when the algorithm completes."""
    if path and Path(path).suffix.lower() == ".csv":
        details = QgsProcessingContext.LayerDetails(name, context.project(), output)
        context.addLayerToLoadOnCompletion(path, details)


def style_on_load(context: QgsProcessingContext, path: str, style: Callable[[QgsMapLayer], None]) -> None:
    if path and context.willLoadLayerOnCompletion(path):
        context.layerToLoadOnCompletionDetails(path).setPostProcessor(StyleLayerOnLoad(style))


def categorized_by_class(classes: list[dict], geometry: str = "polygon") -> Callable[[QgsMapLayer], None]:
    """A renderer on the ``class`` field: one category per class, in its colour, labelled with its name."""

    def style(layer: QgsMapLayer) -> None:
        if not isinstance(layer, QgsVectorLayer):
            return
        categories = []
        for item in classes:
            color = QColor(item["color"])
            if geometry == "point":
                symbol = QgsMarkerSymbol.createSimple({"name": "circle", "color": color.name(), "size": "2.4"})
            else:
                symbol = QgsFillSymbol.createSimple(
                    {"color": color.name(), "outline_color": color.darker(150).name(), "outline_width": "0.1"}
                )
            categories.append(QgsRendererCategory(int(item["value"]), symbol, str(item["name"])))
        layer.setRenderer(QgsCategorizedSymbolRenderer("class" if geometry != "point" else "map_class", categories))
        layer.triggerRepaint()

    return style


def paletted_by_class(classes: list[dict]) -> Callable[[QgsMapLayer], None]:
    def style(layer: QgsMapLayer) -> None:
        if not isinstance(layer, QgsRasterLayer):
            return
        entries = [QgsPalettedRasterRenderer.Class(int(c["value"]), QColor(c["color"]), c["name"]) for c in classes]
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
        layer.triggerRepaint()

    return style


class StyleLayerOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer (raster or vector) when QGIS loads it; kept alive until it has run."""

    _pending: ClassVar[list[StyleLayerOnLoad]] = []

    def __init__(self, style: Callable[[QgsMapLayer], None]) -> None:
        super().__init__()
        self.style = style
        StyleLayerOnLoad._pending.append(self)

    def postProcessLayer(
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        self.style(layer)
        if self in StyleLayerOnLoad._pending:
            StyleLayerOnLoad._pending.remove(self)


def write_html(path: str, title: str, pictures: list[str], rows: list[tuple[str, str]]) -> str:
    """A small HTML page for the Processing results viewer: a table of figures and the pictures."""
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    images = "".join(f'<p><img src="{Path(p).as_uri()}" alt="{html.escape(Path(p).name)}"></p>' for p in pictures)
    text = f"<html><body><h3>{html.escape(title)}</h3><table>{cells}</table>{images}</body></html>\n"
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.partial{target.suffix}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return path


def percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f} %"
