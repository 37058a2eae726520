"""The model card (``README.md``) of a transfer run, in the Hub's format.

The card is ``huggingface_hub``'s `ModelCard`: YAML metadata built with `ModelCardData` and
`EvalResult` (so ``model-index`` has exactly the layout the Hub parses into its evaluation
widget), then a Markdown body: lineage (base encoder -> source task -> target task, strategy,
freezing), training settings, target results beside the no-transfer baseline with the gain and
its 95% interval, label names, a usage snippet and limitations.

An existing card is updated, not clobbered (peft's ``create_or_update_model_card`` does the
same): its metadata keys are kept and ours are set over them (tags are merged), and only the text
between the ``textransfer`` markers below is regenerated; anything a user wrote outside them
stays as it was.

Example:

```python
from textransfer.card import write_card
write_card("runs/demo/model", results, cfg.to_dict(), repo_id="me/news-to-reviews")
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..files import atomic_write_text

BEGIN = "<!-- textransfer:begin (generated; edits between these markers are replaced on the next run) -->"
END = "<!-- textransfer:end -->"
TAGS = ["textransfer", "text-classification", "transfer-learning"]


def _hub_dataset_id(task: Optional[Dict[str, Any]]) -> Optional[str]:
    """The task's Hub dataset id, or None for local files (metadata `datasets` must name Hub ids)."""
    if not task or task.get("data_files") is not None or not task.get("path"):
        return None
    path = str(task["path"])
    if os.path.exists(path) or path.startswith((".", "/", "~", "textransfer:")):
        return None
    return path


def _hub_model_id(name: Optional[str]) -> Optional[str]:
    """``base_model`` must be a Hub id; a local folder is named in the text only."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return None
    return name


def _fmt(v, signed: bool = False) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def card_data(results: Dict[str, Any], config: Dict[str, Any], model_name: str) -> ModelCardData:
    """The YAML metadata: library, pipeline, base model, datasets, tags and the target metrics."""
    target = results["target"]
    target_cfg = config.get("target") or {}
    dataset_id = _hub_dataset_id(target_cfg)
    datasets: List[str] = [d for d in (_hub_dataset_id(config.get("source")), dataset_id) if d]
    split = target_cfg.get("test_split", "test")
    evals = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=dataset_id or target["task"],
            dataset_name=target["task"],
            dataset_config=target_cfg.get("dataset_config"),
            dataset_split=split,
            metric_type=name,
            metric_name=f"{name} (macro)" if name in ("f1", "precision", "recall") else name,
            metric_value=round(float(value), 4),
        )
        for name, value in target["transfer"]["metrics"].items()
        if isinstance(value, (int, float))
    ]
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=_hub_model_id(results.get("model") or (config.get("model") or {}).get("name_or_path")),
        datasets=datasets or None,
        tags=list(TAGS),
        metrics=[e.metric_type for e in evals] or None,
        model_name=model_name,
        eval_results=evals or None,
    )


def _stage_rows(config: Dict[str, Any], results: Dict[str, Any]) -> List[str]:
    rows = ["| stage | epochs | batch size | learning rate | optimiser steps | best epoch | train time (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    stages = [("source", config.get("source_training") or {}, results.get("source")),
              ("target (transfer)", config.get("target_training") or {}, results["target"].get("transfer")),
              ("baseline", config.get("target_training") or {}, results["target"].get("baseline"))]
    for name, args, summary in stages:
        if not summary:
            continue
        epochs = args.get("max_steps") and f"max {args['max_steps']} steps" or args.get("num_epochs", "-")
        rows.append(f"| {name} | {epochs} | {args.get('batch_size', '-')} | {args.get('learning_rate', '-')} | "
                    f"{summary.get('optimizer_steps', '-')} | {summary.get('best_epoch', '-')} | "
                    f"{summary.get('train_time_s', '-')} |")
    return rows


def _freezing(args: Dict[str, Any], params: Dict[str, Any]) -> str:
    parts = []
    if args.get("freeze_embeddings"):
        parts.append("embeddings frozen")
    if args.get("freeze_layers"):
        parts.append(f"bottom {args['freeze_layers']} encoder layers frozen")
    if args.get("freeze_patterns"):
        parts.append(f"parameters matching {args['freeze_patterns']} frozen")
    if args.get("train_word_embeddings") is False:
        parts.append("word-embedding matrix fixed")
    what = "; ".join(parts) if parts else "nothing frozen (full fine-tuning)"
    if params.get("total_parameters"):
        what += (f" — {params['trainable_parameters']:,} of {params['total_parameters']:,} parameters trained "
                 f"({100 * params['trainable_parameters'] / params['total_parameters']:.1f}%)")
    return what


def card_body(results: Dict[str, Any], config: Dict[str, Any], repo_id: Optional[str] = None) -> str:
    """The Markdown between the markers."""
    target = results["target"]
    source = results.get("source")
    base = results.get("model") or (config.get("model") or {}).get("name_or_path")
    # results.json holds the strategy's config ({"name": ..., options}); older runs hold a name
    strategy_cfg = results.get("strategy") or {"name": "finetune"}
    if isinstance(strategy_cfg, str):
        strategy_cfg = {"name": strategy_cfg}
    strategy = strategy_cfg["name"]
    options = ", ".join(f"{k}={v}" for k, v in strategy_cfg.items() if k != "name")
    target_args = config.get("target_training") or {}
    labels = target["label_names"]
    lines = [BEGIN, "", f"# {repo_id.split('/')[-1] if repo_id else target['task'] + ' classifier'}", "",
             f"A `{target['task']}` text classifier ({len(labels)} labels) made with "
             f"[textransfer](https://github.com/textransfer/textransfer) by transfer learning.", "",
             "## Lineage", ""]
    chain = [f"`{base}` (pretrained encoder)"]
    if source:
        chain.append(f"source task `{source['task']}` ({len(source.get('label_names', []))} labels)")
    chain.append(f"target task `{target['task']}`")
    lines += [" -> ".join(chain), "",
              f"- Transfer strategy: `{strategy}`" + (f" ({options})" if options else "") + ("" if source else " (no source stage: trained on the target only)"),
              f"- Target-stage freezing: {_freezing(target_args, target['transfer'].get('parameters') or {})}",
              f"- Tokens kept per text: {(config.get('model') or {}).get('max_length', '-')}; "
              f"seed {results.get('seed', config.get('seed', '-'))}",
              "", "## Training", ""]
    lines += _stage_rows(config, results)
    data = target.get("data") or {}
    if data.get("rows"):
        lines += ["", "Target rows per split: " + ", ".join(f"{k} {v:,}" for k, v in data["rows"].items()) + "."]

    lines += ["", "## Results", "",
              f"Test split of `{target['task']}` ({target.get('test_rows', '?')} rows). The baseline is the same "
              f"target training from `{base}` without the source stage; the interval is a paired bootstrap "
              f"over test examples.", "",
              "| metric | transfer | baseline (no transfer) | gain | gain 95% CI |", "| --- | --- | --- | --- | --- |"]
    tm = target["transfer"]["metrics"]
    bm = (target.get("baseline") or {}).get("metrics") or {}
    gains = results.get("gain") or {}
    cis = results.get("gain_ci") or {}
    for name, value in tm.items():
        ci = cis.get(name)
        lines.append(f"| {name} | {_fmt(value)} | {_fmt(bm.get(name))} | {_fmt(gains.get(name), signed=True)} | "
                     + (f"[{ci['low']:+.4f}, {ci['high']:+.4f}]" if ci else "-") + " |")
    if results.get("verdict"):
        lines += ["", results["verdict"]]

    lines += ["", "## Labels", "", "| id | label |", "| --- | --- |"]
    lines += [f"| {i} | {name} |" for i, name in enumerate(labels)]

    ref = repo_id or "path/to/model"
    lines += ["", "## Usage", "", "```python", "from transformers import pipeline", "",
              f'classifier = pipeline("text-classification", model="{ref}")',
              'print(classifier("A wonderful little gadget."))', "```", "", "Or for a whole file:", "", "```",
              f"textransfer predict {ref} --input texts.csv --text-column text --output predictions.csv", "```",
              "", "## Limitations", ""]
    if results.get("negative_transfer"):
        primary = (results.get("noise_test") or {}).get("metric", "accuracy")
        lines.append(f"- **Negative transfer**: on `{target['task']}` this transfer model is worse than the "
                     f"no-transfer baseline beyond noise ({primary} gain {_fmt(gains.get(primary), signed=True)}, "
                     f"95% CI entirely below 0). The baseline model is the better choice for this task.")
    elif results.get("negative_transfer") is None:
        lines.append("- No baseline was trained, so whether the source stage helped is unknown.")
    lines += [f"- Trained and tested on `{target['task']}` only; expect lower scores on text from other domains.",
              f"- Texts longer than {(config.get('model') or {}).get('max_length', 'the training length')} tokens "
              f"are truncated.",
              "- The figures above come from one run with one seed.", "", END]
    return "\n".join(lines)


def _merge_body(existing: str, body: str) -> str:
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + body + tail
    existing = existing.strip()
    return (existing + "\n\n" + body + "\n") if existing else body + "\n"


def render_card(results: Dict[str, Any], config: Dict[str, Any], repo_id: Optional[str] = None,
                existing: Optional[str] = None) -> str:
    """The card's full text; ``existing`` (an earlier README.md) is updated, not replaced."""
    name = repo_id.split("/")[-1] if repo_id else f"{target_name(results)}-classifier"
    data = card_data(results, config, model_name=name)
    body = card_body(results, config, repo_id=repo_id)
    if existing:
        old = ModelCard(existing, ignore_metadata_errors=True)
        merged = old.data.to_dict()
        ours = data.to_dict()
        tags = list(dict.fromkeys((merged.get("tags") or []) + (ours.get("tags") or [])))
        merged.update(ours)
        merged["tags"] = tags
        data = ModelCardData(**merged)
        text = _merge_body(old.text, body)
    else:
        text = body + "\n"
    return f"---\n{data.to_yaml()}\n---\n{text}"


def target_name(results: Dict[str, Any]) -> str:
    return str(results["target"]["task"])


def write_card(model_dir, results: Dict[str, Any], config: Dict[str, Any], repo_id: Optional[str] = None,
               previous: Optional[Path] = None) -> Path:
    """Write (or update) ``model_dir/README.md``; call it on the main process only.

    ``previous`` names an earlier card to update when it is not ``model_dir/README.md`` itself
    (a run saves into a temp folder that replaces ``model/``).
    """
    path = Path(model_dir) / "README.md"
    source = Path(previous) if previous is not None and Path(previous).is_file() else path
    existing = source.read_text() if source.is_file() else None
    atomic_write_text(path, render_card(results, config, repo_id=repo_id, existing=existing))
    return path


def minimal_card(label_names: List[str], base_model: Optional[str], repo_id: Optional[str] = None,
                 existing: Optional[str] = None) -> str:
    """A card for a saved model that has no run results beside it (metadata, labels, usage)."""
    data = ModelCardData(library_name="transformers", pipeline_tag="text-classification", tags=list(TAGS),
                         base_model=_hub_model_id(base_model))
    ref = repo_id or "path/to/model"
    body = "\n".join([BEGIN, "", "## Labels", "", "| id | label |", "| --- | --- |",
                      *[f"| {i} | {n} |" for i, n in enumerate(label_names)], "", "## Usage", "", "```python",
                      "from transformers import pipeline", "",
                      f'classifier = pipeline("text-classification", model="{ref}")', "```", "", END])
    if existing:
        old = ModelCard(existing, ignore_metadata_errors=True)
        merged = old.data.to_dict()
        merged.update({k: v for k, v in data.to_dict().items() if k != "tags"})
        merged["tags"] = list(dict.fromkeys((merged.get("tags") or []) + TAGS))
        return f"---\n{ModelCardData(**merged).to_yaml()}\n---\n{_merge_body(old.text, body)}"
    return f"---\n{data.to_yaml()}\n---\n{body}\n"
