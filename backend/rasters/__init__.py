"""Rasters in and out: reading a scene's bands (:mod:`~backend.rasters.raster_io`), the region of interest
(:mod:`~backend.rasters.roi`), writing class, confidence and entropy rasters
(:mod:`~backend.rasters.class_raster`) and PNG quicklooks (:mod:`~backend.rasters.quicklook`), and outputs
that appear only when complete (:mod:`~backend.rasters.atomic`)."""
