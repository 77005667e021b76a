"""From a class raster to answers, block by block (bounded memory), every output written atomically.

- :mod:`~backend.analysis.classes`: the classes (values, names, colours) of a class raster, pixel areas, strips
- :mod:`~backend.analysis.vectorize`: polygons per connected region (``crossearth vectorize``)
- :mod:`~backend.analysis.areas`: class areas per zone (``crossearth areas``)
- :mod:`~backend.analysis.estimators`: confusion-matrix measures and Olofsson et al. (2014)'s area-weighted ones
- :mod:`~backend.analysis.accuracy`: a map against a reference raster, points or polygons (``crossearth accuracy``)
- :mod:`~backend.analysis.sampling`: random and stratified sample points (``crossearth sample-points``)
- :mod:`~backend.analysis.change`: from-to classes and the transition matrix (``crossearth change``)
"""

from backend.analysis.classes import ClassRaster, read_class_raster

__all__ = ["ClassRaster", "read_class_raster"]
