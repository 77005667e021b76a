"""CrossEarth backend: everything that computes, free of QGIS.

It runs inside QGIS, in a subprocess, on a server or in a notebook alike. From the top down:

- :mod:`backend.cli`, :mod:`backend.jobs`, :mod:`backend.suggest`: what users run (segment, adapt, evaluate,
  where to label next)
- :mod:`backend.contract`, :mod:`backend.errors`, :mod:`backend.progress`: the job options shared with the
  plugin (torch-free), the one-line user error, the progress and cancel callables
- :mod:`backend.segmentation`: whole rasters through a model, by sliding window, engine and executor
- :mod:`backend.adaptation`: adapting a model to a scene, the Fisher gate and the self-check
- :mod:`backend.analysis`: scores, and what comes after a class raster (polygons, areas, accuracy, change)
- :mod:`backend.model`: the network, its toolbox, model cards, the registry, adapter checkpoints
- :mod:`backend.rasters`: reading scenes, regions of interest, writing class rasters, atomic outputs
"""

__version__ = "0.1.0"
