"""A map tool to drag a rectangle on the canvas: the dock's "drawn rectangle" region of interest."""

from __future__ import annotations

from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QColor


class RectangleMapTool(QgsMapTool):
    """Press, drag, release; emits the rectangle in the canvas CRS and keeps it outlined."""

    rectangle_drawn = pyqtSignal(QgsRectangle)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.start: QgsPointXY | None = None
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setStrokeColor(QColor(60, 16, 152))
        self.band.setFillColor(QColor(0, 0, 0, 0))  # an outline only: the results below keep their colours
        self.band.setWidth(2)

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:
        self.start = self.toMapCoordinates(event.pos())
        self.show_rectangle(QgsRectangle(self.start, self.start))

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:
        if self.start is not None:
            self.show_rectangle(QgsRectangle(self.start, self.toMapCoordinates(event.pos())))

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if self.start is None:
            return
        rectangle = QgsRectangle(self.start, self.toMapCoordinates(event.pos()))
        self.start = None
        if rectangle.width() > 0 and rectangle.height() > 0:
            self.show_rectangle(rectangle)
            self.rectangle_drawn.emit(rectangle)
        else:
            self.clear()

    def show_rectangle(self, rectangle: QgsRectangle) -> None:
        self.band.setToGeometry(QgsGeometry.fromRect(rectangle), None)

    def clear(self) -> None:
        self.band.reset(QgsWkbTypes.PolygonGeometry)
