"""From a class raster to answers, block by block (bounded memory), every output written atomically.

- :mod:`~backend.analysis.metrics`: per-class IoU, mIoU and overall accuracy of a prediction (``crossearth evaluate``)
- :mod:`~backend.analysis.classes`: the classes (values, names, colours) of a class raster, pixel areas, strips
- :mod:`~backend.analysis.vectorize`: polygons per connected region (``crossearth vectorize``)
- :mod:`~backend.analysis.areas`: class areas per zone (``crossearth areas``)
- :mod:`~backend.analysis.estimators`: confusion-matrix measures and Olofsson et al. (2014)'s area-weighted ones
- :mod:`~backend.analysis.accuracy`: a map against a reference raster, points or polygons (``crossearth accuracy``)
- :mod:`~backend.analysis.sampling`: random and stratified sample points (``crossearth sample-points``)
- :mod:`~backend.analysis.change`: from-to classes and the transition matrix (``crossearth change``)
"""

__all__ = ["ClassRaster", "read_class_raster"]


def __getattr__(name: str):
    """Lazy: the CLI imports this package to register its commands, without loading rasterio for --help."""
    if name in __all__:
        from backend.analysis import classes

        return getattr(classes, name)
    raise AttributeError(name)
