"""CrossEarth backend: everything that computes, free of QGIS.

It runs inside QGIS, in a subprocess, on a server or in a notebook alike.
"""

__version__ = "0.1.0"
