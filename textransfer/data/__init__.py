"""Layer 2, data: tasks loaded from local files or the Hub and checked (``loading``), streamed
corpora (``streaming``), tokenization (``tokenization``) and length-grouped batches (``batching``).

``loading`` hands a ``streaming: true`` task to ``streaming``; both build on ``sources`` (finding
and reading files, checked against their ``encoding`` by ``encoding``), ``transforms`` (column
checks, filters, the user's columns into the package's own schema) and ``task`` (``TaskData``);
``labels`` holds a table's label set, label checks and label ids.

May import: ``config`` and the leaves (``errors``, ``formats``, ``files``), plus datasets,
transformers' tokenizers and torch's data utilities. Nothing about models or training.
"""
