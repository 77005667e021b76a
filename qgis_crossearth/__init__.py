"""CrossEarth for QGIS: adapt a remote-sensing segmentation model to your scene, then segment it."""

from qgis_crossearth.paths import ensure_backend_importable

ensure_backend_importable()  # the plugin's modules import backend.contract


def classFactory(iface):
    from qgis_crossearth.plugin import CrossEarthPlugin

    return CrossEarthPlugin(iface)
