"""The job options moved to :mod:`backend.contract`; these names stay importable from here."""

from backend.contract import DEFAULT_MODEL, AdaptOptions, Scene, SegmentOptions

__all__ = ["DEFAULT_MODEL", "AdaptOptions", "Scene", "SegmentOptions"]
