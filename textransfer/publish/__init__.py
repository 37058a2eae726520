"""Layer 7, publish: what a person reads and what goes to the Hub: the results table and plots
(``report``), the model card (``card``) and ``push`` (``hub``).

May import: every layer below (``config`` ... ``strategies``) and the leaves.
"""
