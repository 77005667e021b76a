"""Training and data-set code, never in the plugin ZIP: the Dubai data set (:mod:`~training.dubai`), the
stem's ImageNet weights (:mod:`~training.stem_weights`) and the choice of the source samples a model ships
(:mod:`~training.source_crops`). ``scripts/train_default.py``, ``scripts/make_source_samples.py`` and the
benchmarks use it from the checkout."""
