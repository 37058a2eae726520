"""Layer 3, modeling: loading encoders and tokenizers, heads (attach, swap), saving, freezing
and the depth of each parameter (gradual unfreezing, layer-wise learning rates).

May import: ``config``, ``data`` and the leaves.
"""
