"""Layer 4, metrics: scores (``evaluate`` metrics with offline fallbacks), the per-class and
confusion-matrix kernel, and the paired bootstrap behind the negative-transfer verdict.

May import: ``config`` and the leaves; numpy and evaluate. No model code.
"""
