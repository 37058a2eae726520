"""Layer 2, data: tasks loaded from local files or the Hub and checked (``loading``), streamed
corpora (``streaming``), tokenization (``tokenization``) and length-grouped batches (``batching``).

``loading`` hands a ``streaming: true`` task to ``streaming``; both build on ``sources`` (finding
and reading files), ``transforms`` (column checks, filters, joined text) and ``task`` (``TaskData``).

May import: ``config`` and the leaves (``errors``, ``formats``, ``files``), plus datasets,
transformers' tokenizers and torch's data utilities. Nothing about models or training.
"""
