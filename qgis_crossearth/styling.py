"""How result layers look: class rasters in the model card's colours and names, confidence as a ramp, the
suggested places to label as outlined boxes labelled with their rank and predicted class."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsPalLayerSettings,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsStyle,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

from qgis_crossearth.model_cards import ModelCard

CONFIDENCE_RAMP = "Viridis"
SPOT_COLOR = "#ff00ff"  # magenta: seen on imagery and on every class colour
SPOT_LABEL = "concat('#', \"rank\", ' ', \"predicted\")"  # "#3 Road"
FLOAT_TYPES = (Qgis.Float32, Qgis.Float64)


def style_class_layer(layer: QgsRasterLayer, card: ModelCard) -> None:
    """One paletted entry per model class; the backend's nodata (255) stays transparent."""
    classes = [QgsPalettedRasterRenderer.Class(c.value, QColor(c.color), c.name) for c in card.classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def confidence_range(layer: QgsRasterLayer) -> tuple[float, float]:
    """Probabilities in [0, 1] for float rasters, percent for integer ones."""
    return (0.0, 1.0) if layer.dataProvider().dataType(1) in FLOAT_TYPES else (0.0, 100.0)


def style_confidence_layer(layer: QgsRasterLayer) -> None:
    """A perceptually uniform ramp from dark (unsure) to bright (sure), five labelled stops."""
    low, high = confidence_range(layer)
    ramp = QgsStyle.defaultStyle().colorRamp(CONFIDENCE_RAMP) or QgsGradientColorRamp(
        QColor("#440154"), QColor("#fde725")
    )
    stops = [i / 4 for i in range(5)]
    items = [
        QgsColorRampShader.ColorRampItem(low + t * (high - low), ramp.color(t), f"{low + t * (high - low):g}")
        for t in stops
    ]
    function = QgsColorRampShader(low, high)
    function.setColorRampType(QgsColorRampShader.Interpolated)
    function.setSourceColorRamp(ramp)
    function.setColorRampItemList(items)
    shader = QgsRasterShader(low, high)
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Styles a Processing output when QGIS loads it into the project.

    QGIS owns the C++ side; the Python side is kept in ``_pending`` until it has run,
    otherwise Python would collect it and QGIS would call a dead object.
    """

    _pending: ClassVar[list[StyleOnLoad]] = []

    def __init__(self, style: Callable[[QgsRasterLayer], None]) -> None:
        super().__init__()
        self.style = style
        StyleOnLoad._pending.append(self)

    def postProcessLayer(
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer):
            self.style(layer)
        if self in StyleOnLoad._pending:
            StyleOnLoad._pending.remove(self)


def style_spots_layer(layer: QgsMapLayer) -> None:
    """Suggested places to label: hollow magenta boxes, each labelled "#rank predicted class"."""
    if not isinstance(layer, QgsVectorLayer):
        return
    symbol = QgsFillSymbol.createSimple(
        {"style": "no", "outline_color": SPOT_COLOR, "outline_width": "0.6", "outline_style": "solid"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    text = QgsTextFormat()
    text.setColor(QColor(SPOT_COLOR))
    text.setSize(9)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setColor(QColor("white"))
    text.setBuffer(buffer)
    settings = QgsPalLayerSettings()
    settings.fieldName = SPOT_LABEL
    settings.isExpression = True
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()
