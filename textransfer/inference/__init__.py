"""Layer 8, inference: a trained model used on new text: ``predict`` (streamed files) and
``evaluate`` (metrics on labelled data).

May import: every layer below (``config`` ... ``publish``) and the leaves.
"""
