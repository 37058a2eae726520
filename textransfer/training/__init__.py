"""Layer 5, training: the Accelerate loop of one stage (``trainer``), its state and checkpoints
(``checkpointing``), the launcher helpers (``distributed``) and one stage end to end
(``stage.train_stage``: freeze, train, test, record), which strategies call.

May import: ``config``, ``data``, ``modeling``, ``metrics`` and the leaves.
"""
