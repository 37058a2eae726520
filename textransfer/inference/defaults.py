"""Defaults of ``predict`` and ``evaluate``, in a module without torch so the CLI's argument
parser shares them without loading a model library."""

DEFAULT_BATCH_SIZE = 64  # rows per forward pass: fills a CPU's matrix units without large padding waste
# Rows read, tokenized and length-sorted together: memory is bounded by it, and the sort inside
# a chunk is what keeps padding low.
DEFAULT_CHUNK_ROWS = 4096
# The encoding of a csv/tsv/jsonl input: what pyarrow, pandas and the JSON standard assume.
DEFAULT_ENCODING = "utf-8"
# `--keep-columns all`: every input column is copied into the output
KEEP_ALL = "all"
# Where the forward pass runs (`--backend`): PyTorch, or ONNX Runtime on an export stored in the
# model folder (the `onnx` extra installs it).
BACKENDS = ("torch", "onnxruntime")
DEFAULT_BACKEND = "torch"
# `--quantize`: dynamic int8 quantisation of the ONNX export (never the default)
QUANTIZE_MODES = ("int8",)
