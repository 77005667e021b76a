"""Runs inside the QGIS desktop (``qgis --code``): open the scene, open the dock, run, screenshot, quit.

Settings come from the environment set by run_desktop.py; the outcome is written as JSON to
``CROSSEARTH_DESKTOP_STATUS`` so the test can check it after QGIS has exited.
"""

import json
import os
import subprocess
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

from qgis_crossearth.dock import ROI_DRAWN

STATUS = os.environ["CROSSEARTH_DESKTOP_STATUS"]
SCENE = os.environ["CROSSEARTH_DESKTOP_SCENE"]
SCREENSHOT = os.environ["CROSSEARTH_DESKTOP_SCREENSHOT"]
STEPS = int(os.environ.get("CROSSEARTH_DESKTOP_STEPS", "20"))
SCREEN_SIZE = tuple(int(v) for v in os.environ.get("CROSSEARTH_DESKTOP_SCREEN", "1600x1000").split("x")[:2])
TIMEOUT = float(os.environ.get("CROSSEARTH_DESKTOP_TIMEOUT", "900"))
state = {"started": time.time(), "status": "starting", "log": []}


def write_status(**values):
    state.update(values)
    with open(STATUS, "w", encoding="utf-8") as file:
        json.dump(state, file, indent=1, default=str)


def finish(**values):
    write_status(**values)
    QTimer.singleShot(500, QgsApplication.instance().quit)


def screenshot_and_quit(result):
    try:
        iface.mapCanvas().refreshAllLayers()
        deadline = time.time() + 5
        while time.time() < deadline:  # let the canvas render the new layers
            QgsApplication.processEvents()
            time.sleep(0.05)
        display = os.environ["DISPLAY"]
        subprocess.run(["import", "-display", display, "-window", "root", SCREENSHOT], check=True)
        finish(
            status=result.status,
            error=result.error,
            group=result.group,
            layers=[QgsProject.instance().mapLayer(layer_id).name() for layer_id in result.layers],
            outputs=result.outputs,
            seconds=time.time() - state["started"],
        )
    except Exception:
        finish(status="failed", error=traceback.format_exc())


def start():
    try:
        iface.mainWindow().setGeometry(0, 0, *SCREEN_SIZE)  # Xvfb has no window manager to maximise it
        dock = plugins["qgis_crossearth"].dock
        layer = QgsRasterLayer(SCENE, os.path.splitext(os.path.basename(SCENE))[0], "gdal")
        if not layer.isValid():
            raise RuntimeError(f"{SCENE}: not a raster")
        QgsProject.instance().setCrs(layer.crs())  # the rectangle below is in the layer's CRS
        QgsProject.instance().addMapLayer(layer)
        QgsProject.instance().layerTreeRoot().findLayer(layer.id()).setExpanded(False)
        iface.setActiveLayer(layer)
        iface.mapCanvas().setExtent(layer.extent())
        dock.show()
        dock.raise_()
        # A drawn rectangle over the camp and the creek: the picture shows the classes inside the imagery.
        extent = layer.extent()
        left, top, width, height = extent.xMinimum(), extent.yMaximum(), extent.width(), extent.height()
        rectangle = QgsRectangle(left + 0.05 * width, top - 0.8 * height, left + 0.6 * width, top - 0.12 * height)
        dock.roi_combo.setCurrentIndex(ROI_DRAWN)
        dock.map_tool.show_rectangle(rectangle)
        dock.on_rectangle_drawn(rectangle)
        dock.settings_box.setCollapsed(False)
        dock.steps_spin.setValue(STEPS)
        dock.log_view.textChanged.connect(lambda: write_status(log=dock.log_view.toPlainText().splitlines()[-20:]))
        dock.start()
        if dock.task is None:
            raise RuntimeError(f"the dock did not start: {dock.status.text()}")
        dock.task.completed.connect(lambda result: QTimer.singleShot(300, lambda: screenshot_and_quit(result)))
        write_status(status="running")
    except Exception:
        finish(status="failed", error=traceback.format_exc())


QTimer.singleShot(int(TIMEOUT * 1000), lambda: finish(status="timeout"))
QTimer.singleShot(2000, start)
