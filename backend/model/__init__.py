"""The model and its toolbox: the network (:mod:`~backend.model.network`), the toolbox modules inside it
(:mod:`~backend.model.toolbox`), model cards read without torch (:mod:`~backend.model.cards`, the plugin reads
them), the registry of model folders (:mod:`~backend.model.registry`) and adapter checkpoints
(:mod:`~backend.model.checkpoint`)."""
