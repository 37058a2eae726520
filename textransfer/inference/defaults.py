"""Defaults of ``predict`` and ``evaluate``, in a module without torch so the CLI's argument
parser shares them without loading a model library."""

DEFAULT_BATCH_SIZE = 64  # the most rows in one forward pass (short texts)
# ... and the most tokens (rows x padded length): on a CPU a forward pass is fastest when its
# activations stay in cache, so long texts go a few at a time. Measured here (MiniLM, 1 thread,
# rows/s, ONNX Runtime | torch): 256-token IMDB reviews at 1, 2, 4, 8, 32, 64 rows a batch
# 24.3 | 13.8, 24.6 | 14.9, 24.5 | 14.5, 22.4 | 14.5, 18.7 | 12.5, 11.7 | 11.9; SST-2 sentences
# (about 25 tokens) at 8, 16, 32, 64, 128 rows 235 | 119, 255 | 136, 226 | 129, 196 | 118, 160 | 104.
DEFAULT_MAX_BATCH_TOKENS = 512
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
