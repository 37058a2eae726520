"""Layer 9, run: a whole transfer run (``transfer.run_transfer``: data, the strategy's transfer
arm, the baseline, the verdict (``verdict``), the arm to ship (``shipping``), the outputs
(``outputs``)), ``compare`` (several strategies, one split) and ``auto`` (the automatic choice among
strategies and the baseline on validation: ``strategy: auto``, ``compare --select``).

May import: every layer below and the leaves. Only ``cli`` imports it.
"""
