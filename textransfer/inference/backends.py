"""Where ``predict`` and ``evaluate`` run the model: PyTorch (the default) or ONNX Runtime.

```
textransfer predict runs/demo --input reviews.parquet --output predictions.csv --backend onnxruntime
textransfer evaluate runs/demo --data recipes/news_to_sentiment.yaml --backend onnxruntime [--quantize int8]
```

A backend does one thing: one padded batch of numpy int64 arrays (``input_ids``,
``attention_mask``, ``token_type_ids`` where the tokenizer makes them) in, float32 logits out.
Everything else (tokenization, truncation, length-sorted batching, padding, chunked streaming,
softmax) stays in `Predictor`, so the two backends read exactly the same tokens.

With ``onnxruntime`` the model is exported once, into the model folder itself
(``<model>/onnx/model.onnx``, so ``push`` uploads it with the model), and reused by later calls.
Beside it, ``model.onnx.sources.json`` records the size, modification time and SHA-256 of the
weights and ``config.json`` it was made from; it is exported again when they no longer match
(see ``made_from``). The graph has
the input and output names (``input_ids``, ``attention_mask``, ``token_type_ids`` -> ``logits``)
and dynamic axes (``batch_size``, ``sequence_length``) of optimum's exporter, so tools that
expect an optimum export find the same signature. ``quantize="int8"`` adds
``onnx/model_quantized.onnx`` (dynamic int8 quantisation of the weights of every MatMul):
smaller and faster, with slightly different scores; never the default.

With ONNX Runtime, several cores run several batches at once, one batch a core, rather than
each operation of one batch over all of them (``OnnxBackend.logits_in_order``): the batches are
a few hundred tokens, small matrix products that lose more to splitting than they gain.

Why ``torch.onnx.export`` rather than optimum's exporter: ``optimum-onnx`` (the package that
holds ``optimum.exporters.onnx`` and ``ORTModelForSequenceClassification`` since optimum 2.0)
requires ``transformers<4.58`` and ``optimum~=2.1``, so it cannot be installed beside the
transformers 5 this package runs on. The graph is traced (``torch.onnx.export(dynamo=False)``) from
the model with eager attention: ONNX Runtime runs that graph fastest. Measured here (MiniLM, 1
thread, 128 IMDB reviews at 256 tokens, 2 rows a batch): 31-35 rows/s, against 23-26 for the dynamo
export of the SDPA model and 27 for the dynamo export of the eager one; ONNX Runtime's transformer
optimiser (fused Attention) made it slower (30). The tracer freezes shape-dependent Python to the
example batch (an earlier traced export here was off by 0.016: its inputs were named out of
``forward``'s order, which ``traced_export`` now follows), so every traced export is checked
against PyTorch on batches of other shapes, padded and not, and made again with the dynamo exporter
(``torch.export.Dim`` dynamic shapes, about 1e-8 from PyTorch) if any logit is off by more than
1e-5. Checked by hand (2026-12-02, the traced export of a MiniLM classifier) with optimum-onnx
0.1.0, optimum 2.3.0 and transformers 4.57.6 on the path: ``ORTModelForSequenceClassification.
from_pretrained(folder, subfolder="onnx")`` loads it and gives PyTorch's logits to 3.3e-8.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import sys
import tempfile
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from ..data.fingerprint import files_fingerprint
from ..errors import ConfigError
from ..files import follow_umask, write_json
from ..modeling.first_token import first_token_last_layer
from .defaults import BACKENDS, DEFAULT_BACKEND, QUANTIZE_MODES

ONNX_FOLDER = "onnx"
ONNX_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
SOURCES_SUFFIX = ".sources.json"  # beside an export: what it was made from (``sources_record``)
INSTALL_ONNX = 'pip install "textransfer[onnx]"'
# what the model reads: the tokenizer's outputs that Predictor pads
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# files whose change makes an export stale (the weights, sharded or not, and the config)
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "config.json")
# The export's example batch: two texts of different lengths, so that neither axis has size 1
# (torch.export specialises a dimension of size 0 or 1 to a constant) and padding is exercised.
_EXAMPLE_TEXTS = ["An example sentence to trace the model with.", "A shorter one."]
# What a traced export is checked on: shapes other than the example's, with padding and without,
# one row and three (the TorchScript tracer can freeze shape-dependent code to the example).
_PROBE_BATCHES = (["One row, longer than either of the texts the export was traced with, to check it."],
                  ["Three rows:", "of three different lengths, so that two are padded", "here."],
                  ["Same length.", "Same length."])
EXPORT_TOLERANCE = 1e-5  # largest |logit| difference a traced export may have from PyTorch's
EXPORT_OPSET = 17


class TorchBackend:
    """The forward pass in PyTorch (``inference_mode``), the model as loaded, its last encoder layer
    for the first token only where the classifier reads nothing else (``modeling/first_token.py``)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def logits(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode(), first_token_last_layer(self.model):
            out = self.model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits
        return out.float().numpy()


class OnnxBackend:
    """The forward pass in an ONNX Runtime session of an exported model.

    Args:
        session (`onnxruntime.InferenceSession`): the exported graph's session.
        path (`Path`): the ``.onnx`` file it was made from (reported by ``predict`` and the benchmark).
        workers (`int`, *optional*, defaults to 1): batches `logits_in_order` runs at once, each on
            one core: give it a session with one intra-op thread (`make_backend` does).
    """

    name = "onnxruntime"

    def __init__(self, session, path: Path, workers: int = 1):
        self.session = session
        self.path = Path(path)
        self.inputs = [i.name for i in session.get_inputs()]
        self.workers = max(1, int(workers))

    def logits(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {name: batch[name] for name in self.inputs})[0]

    def logits_in_order(self, batches: Iterable[Dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """``logits`` of each batch, in order, ``workers`` batches at a time.

        Why batches side by side rather than each operation over several threads: a batch of a
        few hundred tokens is too small a matrix product to split well. ``session.run`` releases
        the GIL and ONNX Runtime allows concurrent runs of one session, so each worker thread
        runs whole batches on its own core, with no synchronisation inside a forward pass.
        Measured (MiniLM, 2,000 IMDB reviews at 256 tokens, 2 cores): 43.5-46.3 rows/s against
        35.5-45.2 for one session with two intra-op threads, over six runs each.
        """
        if self.workers == 1:
            return map(self.logits, batches)
        return ordered_concurrent_map(self.logits, batches, self.workers)


def ordered_concurrent_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """``function(item)`` for each of ``items``, yielded in order, computed on ``workers`` threads.

    At most ``2 * workers`` items are in flight (the next ones are prepared while the workers
    run), so a long iterator of batches is never all in memory. Items not yet started when the
    caller stops reading are cancelled.
    """
    pending = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="textransfer-backend") as pool:
        try:
            for item in items:
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
                pending.append(pool.submit(function, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def check_backend(backend: str, quantize: Optional[str]) -> None:
    """A `ConfigError` for an unknown backend or quantisation, quantisation without ONNX Runtime,
    or ``onnxruntime`` when the ``onnx`` extra is not installed (checked before a model loads)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}.")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE_MODES)}.")
    if quantize is not None and backend != "onnxruntime":
        raise ConfigError(f"--quantize {quantize} needs --backend onnxruntime (the torch backend runs the "
                          f"weights as saved).")
    if backend == "onnxruntime":
        import_onnxruntime()


def import_onnxruntime():
    """``onnxruntime``, or a `ConfigError` naming the command that installs it."""
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    # torch's dynamo exporter writes the graph with onnxscript and onnx
    missing = [name for name in ("onnx", "onnxscript") if not _installed(name)]
    if onnxruntime is None or missing:
        what = ", ".join((["onnxruntime"] if onnxruntime is None else []) + missing)
        raise ConfigError(f"--backend onnxruntime needs ONNX Runtime and the ONNX exporter ({what} not installed). "
                          f"Install them with `{INSTALL_ONNX}` (./setup.sh does), or use --backend torch.")
    return onnxruntime


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (onnxscript takes a second)."""
    from importlib.util import find_spec

    if module in sys.modules:  # imported already, or blocked (None)
        return sys.modules[module] is not None
    return find_spec(module) is not None


def make_backend(model: torch.nn.Module, tokenizer, folder: str, backend: str = DEFAULT_BACKEND,
                 quantize: Optional[str] = None, threads: Optional[int] = None):
    """The backend for a loaded ``model`` saved in ``folder``: `TorchBackend`, or an `OnnxBackend`
    on ``folder/onnx/`` (exported first when missing or older than the weights).

    Args:
        threads (`int`, *optional*): the cores ONNX Runtime uses; defaults to torch's
            (``torch.get_num_threads()``), so both backends use as many. They run that many
            batches at once, one a core (`OnnxBackend.logits_in_order`), so a call with a single
            batch uses one core; for one text at a time on several cores, build the backend
            yourself: ``OnnxBackend(make_session(ort, path, threads=N), path)``.
    """
    check_backend(backend, quantize)
    if backend == "torch":
        return TorchBackend(model)
    ort = import_onnxruntime()
    if not Path(folder).is_dir():
        raise ConfigError(f"--backend onnxruntime needs a local model (a run directory or a saved model folder), "
                          f"where the export is stored; '{folder}' is not one. Download the model first, e.g. "
                          f"`hf download {folder} --local-dir models/{Path(folder).name}`.")
    path = onnx_file(model, tokenizer, Path(folder), quantize)
    return OnnxBackend(make_session(ort, path, threads=1), path, workers=threads or torch.get_num_threads())


def make_session(ort, path: Path, threads: Optional[int] = None):
    """An ONNX Runtime CPU session with every graph optimisation on (constant folding, node
    fusions such as attention, GELU and LayerNorm) and ``threads`` intra-op threads (default: torch's)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # the graph is one chain of layers: nothing to run side by side
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_file(model: torch.nn.Module, tokenizer, folder: Path, quantize: Optional[str] = None) -> Path:
    """``folder/onnx/model.onnx`` (or ``model_quantized.onnx``), exported or quantised first when
    missing or stale."""
    exported = folder / ONNX_FOLDER / ONNX_FILE
    make_unless_current(exported, weight_files(folder), lambda: export_onnx(model, tokenizer, exported))
    if quantize is None:
        return exported
    quantized = folder / ONNX_FOLDER / QUANTIZED_FILE
    make_unless_current(quantized, [exported], lambda: quantize_int8(exported, quantized))
    return quantized


def make_unless_current(target: Path, sources: Sequence[Path], make: Callable[[], None]) -> None:
    """Run ``make`` (which writes ``target``) unless ``target`` was made from ``sources`` as they
    are now, then record what it was made from. The record is taken before ``make`` runs: from the
    files the model in memory was loaded from, not from any written meanwhile."""
    if made_from(target, sources):
        return
    record = sources_record(sources)
    make()
    write_json(sources_record_path(target), record)


def weight_files(folder: Path) -> list:
    return sorted(p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern))


def sources_record_path(target: Path) -> Path:
    return target.with_name(target.name + SOURCES_SUFFIX)


def sources_record(sources: Sequence[Path]) -> Dict[str, Dict]:
    """What a file is made from: each source's size, modification time and SHA-256, by name."""
    record = {}
    for path in sources:
        stat = path.stat()
        record[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": files_fingerprint([path])}
    return {"sources": record}


def made_from(target: Path, sources: Sequence[Path]) -> bool:
    """True when ``target`` exists and its record names exactly ``sources`` with their content.

    Why content and not modification times alone: a folder downloaded from the Hub or copied
    gets new times in any order (a current export would look stale), and older weights copied
    back with their times kept would look older than a stale export. A source whose size and time
    match the record is taken as unchanged; any other is hashed and compared. A target without a
    record (made by an earlier textransfer, or a write killed before the record) is made again."""
    record_path = sources_record_path(target)
    if not (target.is_file() and record_path.is_file()):
        return False
    try:
        recorded = json.loads(record_path.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not isinstance(recorded, dict) or not all(isinstance(entry, dict) for entry in recorded.values()):
        return False  # not a record this package wrote: made again rather than trusted
    if sorted(recorded) != sorted(p.name for p in sources):
        return False
    return all(_unchanged(p, recorded[p.name]) for p in sources)


def _unchanged(path: Path, recorded: Mapping) -> bool:
    stat = path.stat()
    if stat.st_size != recorded.get("size"):
        return False
    return stat.st_mtime_ns == recorded.get("mtime_ns") or files_fingerprint([path]) == recorded.get("sha256")


def export_inputs(tokenizer) -> Dict[str, torch.Tensor]:
    """The example batch the export traces: the tokenizer's own outputs, padded."""
    batch = tokenizer(_EXAMPLE_TEXTS, padding=True, return_tensors="pt")
    return {k: v.to(torch.int64) for k, v in batch.items() if k in MODEL_INPUTS}


def export_onnx(model: torch.nn.Module, tokenizer, path: Path) -> None:
    """Export ``model`` to ``path`` with dynamic batch and sequence axes, through a temp file
    renamed into place (a reader never sees half an export).

    First with the TorchScript exporter and eager attention (the faster graph in ONNX Runtime,
    see the module's docstring), checked against PyTorch on batches of other shapes than the
    traced one; if any logit differs by more than ``EXPORT_TOLERANCE``, with the dynamo exporter.
    Either way the last encoder layer is exported for the first token only where the classifier
    reads nothing else (``modeling/first_token.py``: the same logits, less work per row).
    """
    print(f"note: exporting the model to ONNX once ({path}); later calls reuse it.", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    follow_umask(path.parent, directory=True)
    inputs = export_inputs(tokenizer)
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # the exporters report their steps on stdout, where predict may be writing its csv, and
        # warn about tracing and operators that do not concern these models
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), _quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            # either graph computes the last layer for the first token only, as TorchBackend does
            with first_token_last_layer(model):
                with eager_attention(model):
                    traced_export(model, inputs, tmp)
                if export_error(model, tokenizer, tmp) > EXPORT_TOLERANCE:
                    dynamo_export(model, inputs, tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        model.train(was_training)


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module):
    """The model with transformers' eager attention (matmul, softmax, matmul) while the block runs."""
    before = getattr(model.config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def traced_export(model: torch.nn.Module, inputs: Dict[str, torch.Tensor], path: str) -> None:
    # the tracer names the graph's inputs in the order of forward's parameters, whatever the
    # order of ``kwargs``: the names must come in that order too (a tokenizer puts token_type_ids
    # before attention_mask, BERT's forward takes attention_mask first)
    order = list(inspect.signature(model.forward).parameters)
    inputs = dict(sorted(inputs.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in inputs}
    torch.onnx.export(model, (), path, kwargs=inputs, input_names=list(inputs), output_names=["logits"],
                      dynamic_axes=axes, opset_version=EXPORT_OPSET, dynamo=False)


def dynamo_export(model: torch.nn.Module, inputs: Dict[str, torch.Tensor], path: str) -> None:
    batch, length = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    program = torch.onnx.export(model, (), kwargs=inputs, input_names=list(inputs), output_names=["logits"],
                                dynamic_shapes={k: {0: batch, 1: length} for k in inputs}, dynamo=True,
                                verbose=False)
    program.save(path, external_data=False)  # one file: protobuf's 2 GB limit is far above our encoders


def export_error(model: torch.nn.Module, tokenizer, path: str) -> float:
    """The largest |logit| difference between the export at ``path`` and ``model`` (as loaded, its
    own attention) over the probe batches: padded and unpadded, one row and several."""
    exported = OnnxBackend(make_session(import_onnxruntime(), Path(path), threads=1), Path(path))
    reference = TorchBackend(model)
    worst = 0.0
    for texts in _PROBE_BATCHES:
        batch = tokenizer(texts, padding=True, return_tensors="np")
        feed = {k: batch[k].astype(np.int64) for k in exported.inputs}  # what the graph reads, as Predictor pads it
        worst = max(worst, float(np.abs(exported.logits(feed) - reference.logits(feed)).max()))
    return worst


def quantize_int8(source: Path, path: Path) -> None:
    """Dynamic int8 quantisation of ``source``'s weights (activations are quantised per batch at
    run time), written to ``path`` through a temp file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    print(f"note: quantising the ONNX model to int8 once ({path}); later calls reuse it.", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(fd)
    try:
        with _quiet_logger(None):  # quantize_dynamic logs a pre-processing hint on the root logger
            quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_logger(name: Optional[str]):
    """Only errors from logger ``name`` (None: the root logger) while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
