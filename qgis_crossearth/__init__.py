"""CrossEarth for QGIS: adapt a remote-sensing segmentation model to your scene, then segment it."""


def classFactory(iface):
    from qgis_crossearth.plugin import CrossEarthPlugin

    return CrossEarthPlugin(iface)
