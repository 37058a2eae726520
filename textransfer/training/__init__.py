"""Layer 5, training: the Accelerate loop of one stage (``trainer``) over its batches
(``loaders``), optimiser and schedule (``optimization``) and position (``loop_state``), which
checkpoints save (``checkpointing``); the run's accelerator and launcher helpers
(``accelerator``); which validation score is better (``selection``); and one stage end to end
(``stage.train_stage``: freeze, train, test, record), which strategies call.

May import: ``config``, ``data``, ``modeling``, ``metrics`` and the leaves.
"""
