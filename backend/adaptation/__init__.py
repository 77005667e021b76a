"""Adapting a model to a scene: the training loop (:mod:`~backend.adaptation.adapt`), the Fisher gate
(:mod:`~backend.adaptation.fisher_gate`), crops and augmentation (:mod:`~backend.adaptation.augment`), labels
from an analyst's polygons (:mod:`~backend.adaptation.labels`), a model's shipped source samples
(:mod:`~backend.adaptation.source_samples`), the self-check that keeps the unadapted model when adaptation did
not help (:mod:`~backend.adaptation.self_check`) and the gate's selection report
(:mod:`~backend.adaptation.selection_report`)."""
