"""Layer 9, run: a whole transfer run (``transfer.run_transfer``: data, the strategy's transfer
arm, the baseline, the verdict (``verdict``), the arm to ship (``shipping``), the outputs
(``outputs``)) and ``compare`` (several strategies, one split).

May import: every layer below and the leaves. Only ``cli`` imports it.
"""
