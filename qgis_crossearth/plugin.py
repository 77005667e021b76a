"""The plugin object QGIS creates: registers the provider, the dock, the menu and the options page."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from qgis_crossearth import paths
from qgis_crossearth.provider import CrossEarthProvider

MENU = "&CrossEarth"


class CrossEarthPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: CrossEarthProvider | None = None
        self.dock = None
        self.options_factory = None
        self.actions: list[QAction] = []

    def initProcessing(self) -> None:
        self.provider = CrossEarthProvider()
        if not QgsApplication.processingRegistry().addProvider(self.provider):
            self.provider = None  # the id is taken (QGIS logged it and deleted this one): nothing to remove later

    def initGui(self) -> None:
        from qgis_crossearth.dock import AdaptDock
        from qgis_crossearth.options import CrossEarthOptionsFactory

        self.initProcessing()
        self.dock = AdaptDock(self.iface, self.iface.mainWindow())
        self.dock.hide()
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)

        icon = QIcon(paths.icon_path("crossearth.svg"))
        toggle = self.dock.toggleViewAction()
        toggle.setIcon(icon)
        toggle.setText("Adapt to this scene")
        self.iface.addPluginToRasterMenu(MENU, toggle)
        self.iface.addRasterToolBarIcon(toggle)
        self.actions.append(toggle)

        settings = QAction(QgsApplication.getThemeIcon("/mActionOptions.svg"), "Settings…", self.iface.mainWindow())
        settings.triggered.connect(self.show_settings)
        self.iface.addPluginToRasterMenu(MENU, settings)
        self.actions.append(settings)

        self.options_factory = CrossEarthOptionsFactory(self.on_settings_changed)
        self.iface.registerOptionsWidgetFactory(self.options_factory)

    def show_settings(self) -> None:
        from qgis_crossearth.options import PAGE_OBJECT_NAME

        self.iface.showOptionsDialog(self.iface.mainWindow(), currentPage=PAGE_OBJECT_NAME)

    def on_settings_changed(self) -> None:
        """A new model folder changes the MODEL choices of the algorithms and the dock."""
        if self.provider is not None:
            self.provider.refreshAlgorithms()
        if self.dock is not None:
            self.dock.reload_models()

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeRasterToolBarIcon(action)
        self.actions.clear()
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
