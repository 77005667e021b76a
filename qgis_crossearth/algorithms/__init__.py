"""The Processing algorithms of the ``crossearth`` provider."""

from qgis_crossearth.algorithms.accuracy import AccuracyAlgorithm
from qgis_crossearth.algorithms.adapt import AdaptAlgorithm
from qgis_crossearth.algorithms.adapt_segment import AdaptAndSegmentAlgorithm
from qgis_crossearth.algorithms.change import ChangeAlgorithm
from qgis_crossearth.algorithms.class_areas import ClassAreasAlgorithm
from qgis_crossearth.algorithms.evaluate import EvaluateAlgorithm
from qgis_crossearth.algorithms.sample_points import SamplePointsAlgorithm
from qgis_crossearth.algorithms.segment import SegmentAlgorithm
from qgis_crossearth.algorithms.suggest_labels import SuggestLabelsAlgorithm
from qgis_crossearth.algorithms.vectorize import VectorizeAlgorithm

ALGORITHMS = (SegmentAlgorithm, AdaptAlgorithm, AdaptAndSegmentAlgorithm, EvaluateAlgorithm, SuggestLabelsAlgorithm)
ANALYSIS_ALGORITHMS = (
    VectorizeAlgorithm,
    ClassAreasAlgorithm,
    AccuracyAlgorithm,
    SamplePointsAlgorithm,
    ChangeAlgorithm,
)

__all__ = [
    "ALGORITHMS",
    "ANALYSIS_ALGORITHMS",
    "AccuracyAlgorithm",
    "AdaptAlgorithm",
    "AdaptAndSegmentAlgorithm",
    "ChangeAlgorithm",
    "ClassAreasAlgorithm",
    "EvaluateAlgorithm",
    "SamplePointsAlgorithm",
    "SegmentAlgorithm",
    "SuggestLabelsAlgorithm",
    "VectorizeAlgorithm",
]
