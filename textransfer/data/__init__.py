"""Layer 2, data: tasks loaded from local files or the Hub and checked (``loading``), streamed
corpora (``streaming``), tokenization (``tokenization``) and length-grouped batches (``batching``).

May import: ``config`` and the leaves (``errors``, ``formats``, ``files``), plus datasets,
transformers' tokenizers and torch's data utilities. Nothing about models or training.
"""
