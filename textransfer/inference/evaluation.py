"""Scoring a trained model on labelled data: ``textransfer evaluate MODEL --data CONFIG_OR_FILE``.

```
textransfer evaluate runs/demo --data recipes/news_to_sentiment.yaml        # the config's target test split
textransfer evaluate runs/demo --data reviews.csv --text-column text --label-column label
textransfer evaluate runs/demo --data recipes/news_to_sentiment.yaml --backend onnxruntime   # ONNX Runtime
```

MODEL is a run directory, a saved model folder or a Hub id. The metrics are the package's
(``evaluate`` metrics, macro-averaged where that applies, see `textransfer.metrics`); the
per-class report and the confusion matrix come from the same predictions. Written to
``--output-dir``: ``evaluation.json``, ``per_class.txt`` and ``confusion_matrix.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..config import DEFAULT_METRICS, RunConfig
from ..data.loading import load_task
from ..errors import DataError
from ..files import RESULTS_FILE, atomic_write_text, check_output_dir, resolve_model, write_json
from ..metrics.confusion import confusion_matrix, per_class
from ..metrics.scores import compute_metrics
from ..publish.report import plot_confusion_matrix
from .defaults import DEFAULT_BACKEND, DEFAULT_MAX_BATCH_TOKENS
from .predict import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS, Predictor, read_chunks

CONFIG_SUFFIXES = (".yaml", ".yml")  # --data naming a recipe rather than a data file


def per_class_report(predictions: Sequence[int], references: Sequence[int], label_names: List[str]) -> Dict[str, Any]:
    """Precision, recall, F1 and support of every class, and the confusion matrix (rows: true)."""
    cm = confusion_matrix(predictions, references, len(label_names))
    scores = per_class(cm)
    classes = {name: {"precision": float(scores.precision[i]), "recall": float(scores.recall[i]),
                      "f1": float(scores.f1[i]), "support": int(scores.support[i])}
               for i, name in enumerate(label_names)}
    return {"classes": classes, "confusion_matrix": cm.tolist()}


def format_report(classes: Dict[str, Dict[str, float]]) -> str:
    width = max(10, *(len(n) for n in classes))
    lines = [f"{'label':<{width}}  precision  recall     f1  support"]
    for name, c in classes.items():
        lines.append(f"{name:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}")
    return "\n".join(lines)


def _label_id(value, row: int, label2id: Dict[str, int], source: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{source}: row {row} has no label.")
    if isinstance(value, str) and value in label2id:
        return label2id[value]
    try:
        i = int(value)
    except (TypeError, ValueError):
        i = None
    if i is None or not 0 <= i < len(label2id) or (isinstance(value, float) and value != i):
        raise DataError(f"{source}: row {row}: label {value!r} is not one of the model's labels "
                        f"{list(label2id)} nor an id 0..{len(label2id) - 1}.")
    return i


def _from_file(predictor: Predictor, path: str, text_column: str, label_column: str, chunk_rows: int):
    label2id = {n: i for i, n in enumerate(predictor.label_names)}
    predictions: List[int] = []
    references: List[int] = []
    row = 0
    for table in read_chunks(path, [text_column, label_column], chunk_rows=chunk_rows):
        texts = table.column(text_column).to_pylist()
        for j, t in enumerate(texts):
            if t is None or not str(t).strip():
                raise DataError(f"'{path}': row {row + j + 1} has empty text in column '{text_column}'; "
                                f"remove it or fill it in (evaluation needs every row).")
        for j, v in enumerate(table.column(label_column).to_pylist()):
            references.append(_label_id(v, row + j + 1, label2id, f"'{path}' column '{label_column}'"))
        predictions.extend(predictor.predict_encoded(predictor.tokenize(texts)).argmax(axis=1).tolist())
        row += len(texts)
    if row == 0:
        raise DataError(f"'{path}' has no rows.")
    return predictions, references


def _from_config(predictor: Predictor, cfg: RunConfig, path: str):
    task = load_task(cfg.target, cache_dir=cfg.cache_dir)
    test = task.splits["test"]
    label2id = {n: i for i, n in enumerate(predictor.label_names)}
    unknown = [n for n in task.label_names if n not in label2id]
    if unknown:
        raise DataError(f"'{path}': target task '{task.name}' has labels {unknown} that the model does not know "
                        f"(its labels: {predictor.label_names}).")
    references = [label2id[task.label_names[i]] for i in test["labels"]]
    predictions = predictor.predict_encoded(predictor.tokenize(test["text"])).argmax(axis=1).tolist()
    return predictions, references


def evaluate_model(model: str, data: str, text_column: str = "text", label_column: str = "label",
                   output_dir: Optional[str] = None, overwrite: bool = False, metrics: Optional[List[str]] = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, max_length: Optional[int] = None,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, backend: str = DEFAULT_BACKEND,
                   quantize: Optional[str] = None,
                   max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS) -> Dict[str, Any]:
    """Metrics, per-class report and confusion matrix of ``model`` on ``data``.

    Args:
        model (`str`): run directory, saved model folder or Hub id.
        data (`str`): a recipe YAML (its target task's test split is used) or a labelled
            csv/tsv/jsonl/parquet file with ``text_column`` and ``label_column`` (label names or ids).
        output_dir (`str`, *optional*): where ``evaluation.json``, ``per_class.txt`` and
            ``confusion_matrix.png`` go; refused if not empty unless ``overwrite``.
        metrics (`list[str]`, *optional*): defaults to the config's metrics, else accuracy, f1,
            precision, recall.
        backend (`str`, *optional*, defaults to `"torch"`): ``"onnxruntime"`` runs the model's ONNX
            export (``<model>/onnx/model.onnx``, exported on first use); ``quantize="int8"`` its
            int8 version.
        batch_size, max_batch_tokens: the most rows and tokens in one forward pass (`Predictor`).

    Returns:
        ``{"metrics": ..., "per_class": ..., "confusion_matrix": ..., "rows": n, ...}``
    """
    out = check_output_dir(output_dir, overwrite)
    cfg = RunConfig.from_yaml(data) if Path(data).suffix.lower() in CONFIG_SUFFIXES else None
    if cfg is not None and max_length is None and not resolve_model(model).run_config:
        max_length = cfg.model.max_length  # a model folder or Hub id: the recipe's length
    predictor = Predictor.from_pretrained(model, max_length=max_length, batch_size=batch_size, backend=backend,
                                          quantize=quantize, max_batch_tokens=max_batch_tokens)
    if cfg is not None:
        predictions, references = _from_config(predictor, cfg, data)
        metrics = metrics or list(cfg.metrics)
    else:
        predictions, references = _from_file(predictor, data, text_column, label_column, chunk_rows)
    names = metrics or list(DEFAULT_METRICS)
    report = per_class_report(predictions, references, predictor.label_names)
    result = {"model": model, "data": data, "rows": len(references), "max_length": predictor.max_length,
              "backend": predictor.backend.name, "quantize": quantize,
              "metrics": compute_metrics(predictions, references, names), "per_class": report["classes"],
              "confusion_matrix": report["confusion_matrix"], "label_names": predictor.label_names}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_confusion_matrix(predictions, references, predictor.label_names, out / "confusion_matrix.png",
                              title=f"{Path(data).stem}: {len(references)} rows")
        atomic_write_text(out / "per_class.txt", format_report(report["classes"]) + "\n")
        write_json(out / "evaluation.json", result)
    return result


# ---------------------------------------------------------------------------- command line
def command(args: argparse.Namespace) -> int:
    """``textransfer evaluate`` (its arguments are defined in ``cli``)."""
    output_dir = args.output_dir
    if output_dir is None:
        run = Path(args.model)
        output_dir = str(run / "evaluation") if (run / RESULTS_FILE).is_file() else "evaluation"
    result = evaluate_model(args.model, args.data, text_column=args.text_column, label_column=args.label_column,
                            output_dir=output_dir, overwrite=args.overwrite, batch_size=args.batch_size,
                            max_length=args.max_length, backend=args.backend, quantize=args.quantize,
                            max_batch_tokens=args.max_batch_tokens)
    print(f"{result['rows']} rows")
    for k, v in result["metrics"].items():
        print(f"{k:<10} {v:.4f}")
    print()
    print(format_report(result["per_class"]))
    print(f"\nWritten: {output_dir}/evaluation.json, per_class.txt, confusion_matrix.png")
    return 0
