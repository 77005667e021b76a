"""The Processing algorithms of the ``crossearth`` provider."""

from qgis_crossearth.algorithms.adapt import AdaptAlgorithm
from qgis_crossearth.algorithms.adapt_segment import AdaptAndSegmentAlgorithm
from qgis_crossearth.algorithms.evaluate import EvaluateAlgorithm
from qgis_crossearth.algorithms.segment import SegmentAlgorithm

ALGORITHMS = (SegmentAlgorithm, AdaptAlgorithm, AdaptAndSegmentAlgorithm, EvaluateAlgorithm)

__all__ = ["ALGORITHMS", "AdaptAlgorithm", "AdaptAndSegmentAlgorithm", "EvaluateAlgorithm", "SegmentAlgorithm"]
