"""Segmenting whole rasters: overlapping windows blended in panels and strips
(:mod:`~backend.segmentation.sliding_window`), the inference engines, torch and onnx
(:mod:`~backend.segmentation.predictor`), and the Dask executor beside the local one
(:mod:`~backend.segmentation.cluster`)."""
