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
from textransfer.publish.card import write_card
write_card("runs/demo/model", results, cfg.to_dict(), repo_id="me/news-to-reviews")
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..files import atomic_write_text
from ..modeling.loading import resolve_model_path
from ..training.results import ARMS, BASELINE_CANDIDATE, RunResults, as_run_results
from .report import Results, candidate_rows, format_interval, format_score

BEGIN = "<!-- textransfer:begin (generated; edits between these markers are replaced on the next run) -->"
END = "<!-- textransfer:end -->"
TAGS = ["textransfer", "text-classification", "transfer-learning"]
# the card metadata key holding the run's own facts (the arm, the shipped arm, both arms' metrics);
# one key of ours, so no name the Hub gives a meaning to is taken
META_KEY = "textransfer"


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


def card_data(results: Results, config: Dict[str, Any], model_name: str, arm: Optional[str] = None) -> ModelCardData:
    """The YAML metadata: library, pipeline, base model, license, language, datasets, tags, the
    target metrics of ``arm``'s model (default: the shipped one) and both arms' metrics."""
    results = as_run_results(results)
    arm = arm or results.shipped_arm
    target = results.target
    target_cfg = config.get("target") or {}
    dataset_id = _hub_dataset_id(target_cfg)
    datasets: List[str] = [d for d in (_hub_dataset_id(config.get("source")), dataset_id) if d]
    split = target_cfg.get("test_split", "test")
    stage = results.arm_stage(arm) or target.transfer
    evals = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=dataset_id or target.task,
            dataset_name=target.task,
            dataset_config=target_cfg.get("dataset_config"),
            dataset_split=split,
            metric_type=name,
            metric_name=f"{name} (macro)" if name in ("f1", "precision", "recall") else name,
            metric_value=round(float(value), 4),
        )
        for name, value in stage.metrics.items()
        if isinstance(value, (int, float))
    ]
    base = base_model_name(results, config)
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=_hub_model_id(base),
        license=base_model_license(base) or config.get("license"),
        language=config.get("language") or None,
        datasets=datasets or None,
        tags=list(TAGS),
        metrics=[e.metric_type for e in evals] or None,
        model_name=model_name,
        eval_results=evals or None,
        **{META_KEY: run_metadata(results, arm)},
    )


def run_metadata(results: RunResults, arm: str) -> Dict[str, Any]:
    """Our metadata entry: which arm this card's model is, which one the run shipped and why, and
    both arms' target test metrics (rounded as ``model-index`` rounds them)."""
    meta: Dict[str, Any] = {"arm": arm, "shipped": results.shipped_arm}
    if results.selected is not None:
        meta["selection"] = results.selected.reason
    if results.auto is not None:  # strategy: auto: this model's candidate, the one shipped, every candidate's scores
        auto = results.auto
        meta.update(candidate=candidate_name(results, arm), shipped=auto.chosen, selection=auto.reason,
                    candidates={name: {"validation": c.validation, "test": _rounded(c.test)}
                                for name, c in auto.candidates.items()})
    meta["metrics"] = {name: _rounded(stage.metrics) for name in ARMS if (stage := results.arm_stage(name)) is not None}
    return meta


def _rounded(metrics: Dict[str, Any]) -> Dict[str, float]:
    """The numeric metrics, rounded as ``model-index`` rounds them."""
    return {k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float))}


def candidate_name(results: RunResults, arm: str) -> str:
    """The candidate of an automatic choice that ``arm``'s model is: its strategy, or ``baseline``."""
    return BASELINE_CANDIDATE if arm == "baseline" else results.strategy_name


def base_model_license(name: Optional[str]) -> Optional[str]:
    """The ``license`` of the base model's own card, when a copy of the card is on this machine
    (a local folder, a packaged model, or the Hub cache); None otherwise."""
    if not name:
        return None
    folder = Path(resolve_model_path(name))
    readme: Optional[Path] = folder / "README.md" if folder.is_dir() else None
    if readme is None or not readme.is_file():
        readme = _cached_card(name)
    if readme is None:
        return None
    try:
        license_ = ModelCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.license
    except (OSError, ValueError):
        return None
    return license_ if isinstance(license_, str) and license_ else None


def _cached_card(repo_id: str) -> Optional[Path]:
    """The Hub card of ``repo_id`` from the local cache, without a network call."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "README.md")
    except ValueError:  # not a valid repo id (e.g. a missing local path)
        return None
    return Path(cached) if isinstance(cached, str) else None


def base_model_name(results: RunResults, config: Dict[str, Any]) -> Optional[str]:
    return results.model or (config.get("model") or {}).get("name_or_path")


def _stage_rows(config: Dict[str, Any], results: RunResults) -> List[str]:
    rows = ["| stage | epochs | batch size | learning rate | optimiser steps | best epoch | train time (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    stages = [("source", config.get("source_training") or {}, results.source),
              ("target (transfer)", config.get("target_training") or {}, results.target.transfer),
              ("baseline", config.get("target_training") or {}, results.target.baseline)]
    for name, args, summary in stages:
        if summary is None:
            continue
        epochs = args.get("max_steps") and f"max {args['max_steps']} steps" or args.get("num_epochs", "-")
        # a stage that trained nothing has no best epoch
        best_epoch = summary.best_epoch if summary.trained else "-"
        rows.append(f"| {name} | {epochs} | {args.get('batch_size', '-')} | {args.get('learning_rate', '-')} | "
                    f"{summary.optimizer_steps} | {best_epoch} | {summary.train_time_s} |")
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


def card_body(results: Results, config: Dict[str, Any], repo_id: Optional[str] = None,
              arm: Optional[str] = None) -> str:
    """The Markdown between the markers, for ``arm``'s model (default: the shipped one)."""
    results = as_run_results(results)
    arm = arm or results.shipped_arm
    target = results.target
    made = ("by transfer learning" if arm == "transfer" else
            "as the no-transfer baseline of a transfer-learning run")
    lines = [BEGIN, "", f"# {repo_id.split('/')[-1] if repo_id else target.task + ' classifier'}", "",
             f"A `{target.task}` text classifier ({len(target.label_names)} labels) made with "
             f"[textransfer](https://github.com/textransfer/textransfer) {made}.", ""]
    lines += _which_model(results, arm)
    lines += _lineage(results, config, arm)
    lines += ["", "## Training", ""] + _stage_rows(config, results)
    rows = target.data.rows
    if rows:
        lines += ["", "Target rows per split: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()) + "."]
    lines += _results_section(results, config, arm)
    lines += ["", "## Labels", "", "| id | label |", "| --- | --- |"]
    lines += [f"| {i} | {name} |" for i, name in enumerate(target.label_names)]
    lines += _usage(repo_id or "path/to/model")
    lines += _limitations(results, config, arm) + [END]
    return "\n".join(lines)


def _which_model(results: RunResults, arm: str) -> List[str]:
    """Which of the run's two models this is, which one the run shipped as ``model/``, and why."""
    if results.auto is not None:
        return _auto_choice(results, arm)
    selected = results.selected
    if selected is None:  # a run from before runs chose: model/ is the transfer model
        return []
    if results.target.baseline is None:
        return ["## Which model this is", "", f"This is the run's only target model: {selected.reason}.", ""]
    other = next(a for a in ARMS if a != arm)
    if arm == selected.arm:
        where = (f"This is the run's **{arm}** model, shipped as its `model/`. The {other} model is kept in "
                 f"`{selected.folder(other)}/` with its own card.")
    else:
        where = (f"This is the run's **{arm}** model, kept in `{selected.folder(arm)}/`; the run shipped the "
                 f"**{selected.arm}** model as its `model/`.")
    return ["## Which model this is", "", where, "", f"Why: {selected.reason}.", ""]


def _auto_choice(results: RunResults, arm: str) -> List[str]:
    """``strategy: auto``: which candidate this model is, which one was shipped and why, and every
    candidate's validation score (the choice) beside its test score (reported only)."""
    auto, name = results.auto, candidate_name(results, arm)
    how = "the automatic choice (`strategy: auto`, or `compare --select`)"
    if auto.folder(name) == "model":
        where = f"This is the **{name}** model, shipped as `model/` by {how} among these candidates."
    else:
        where = f"This is the **{name}** model, kept in `{auto.folder(name)}/`; {how} shipped **{auto.chosen}** as `model/`."
    rows = [f"| {c} | {v} | {t} | `{m}` |" for c, v, t, m in candidate_rows(auto)]
    return ["## Which model this is", "", where, "", f"Why: {auto.reason}.", "",
            f"| candidate | validation {auto.metric} | test {auto.metric} | model |", "| --- | --- | --- | --- |",
            *rows, "", "The choice reads the validation scores only; the test scores are reported, never used to "
            "choose.", ""]


def _lineage(results: RunResults, config: Dict[str, Any], arm: str = "transfer") -> List[str]:
    """Base encoder -> source task -> target task, the strategy and what was frozen."""
    target, source = results.target, results.source
    # results.json holds the strategy's config ({"name": ..., options}); older runs hold a name
    strategy_cfg = {"name": results.strategy} if isinstance(results.strategy, str) else results.strategy
    options = ", ".join(f"{k}={v}" for k, v in strategy_cfg.items() if k != "name")
    chain = [f"`{base_model_name(results, config)}` (pretrained encoder)"]
    stage = results.arm_stage(arm) or target.transfer
    if arm == "baseline" and stage.kind == "source_only":
        how = ("- No transfer: the source-only baseline, trained on the source task without the target's "
               "unlabelled text and used on the target as is")
        chain.append(f"source task `{source.task if source else '?'}` (no adaptation)")
    elif arm == "baseline":
        how = "- No transfer: the same target training from the pretrained encoder, without the source stage"
    else:
        how = (f"- Transfer strategy: `{strategy_cfg['name']}`" + (f" ({options})" if options else "")
               + ("" if source is not None else " (no source stage: trained on the target only)"))
        if source is not None:
            chain.append(f"source task `{source.task}` ({len(source.label_names or [])} labels)")
    chain.append(f"target task `{target.task}`")
    return ["## Lineage", "", " -> ".join(chain), "", how,
            f"- Target-stage freezing: {_freezing(config.get('target_training') or {}, stage.parameters)}",
            f"- Tokens kept per text: {(config.get('model') or {}).get('max_length', '-')}; "
            f"seed {results.seed if results.seed is not None else config.get('seed', '-')}"]


def _results_section(results: RunResults, config: Dict[str, Any], arm: str = "transfer") -> List[str]:
    """Transfer beside the baseline per metric, with the gain, its interval and the verdict."""
    target, verdict = results.target, results.verdict
    lines = ["", "## Results", "",
             f"Test split of `{target.task}` ({'?' if target.test_rows is None else target.test_rows} rows). The "
             f"baseline is the same target training from `{base_model_name(results, config)}` without the source "
             f"stage; the interval is a paired bootstrap over test examples. This card's model is the **{arm}** "
             f"column.", "",
             "| metric | transfer | baseline (no transfer) | gain | gain 95% CI |", "| --- | --- | --- | --- | --- |"]
    baseline = target.baseline.metrics if target.baseline else {}
    intervals = verdict.gain_ci or {}
    for name, value in target.transfer.metrics.items():
        lines.append(f"| {name} | {format_score(value)} | {format_score(baseline.get(name))} | "
                     f"{format_score(verdict.gain.get(name), signed=True)} | {format_interval(intervals.get(name))} |")
    if verdict.text:
        lines += ["", verdict.text]
    return lines


def _usage(ref: str) -> List[str]:
    return ["", "## Usage", "", "```python", "from transformers import pipeline", "",
            f'classifier = pipeline("text-classification", model="{ref}")',
            'print(classifier("A wonderful little gadget."))', "```", "", "Or for a whole file:", "", "```",
            f"textransfer predict {ref} --input texts.csv --text-column text --output predictions.csv", "```"]


def _limitations(results: RunResults, config: Dict[str, Any], arm: str = "transfer") -> List[str]:
    task, verdict = results.target.task, results.verdict
    lines = ["", "## Limitations", ""]
    if verdict.negative_transfer:
        primary = verdict.noise_test.metric if verdict.noise_test else "accuracy"
        shipped_name = results.auto.chosen if results.auto else results.shipped_arm
        shipped = f" The run shipped the {shipped_name} model as `model/`." if results.selected else ""
        lines.append(f"- **Negative transfer**: on `{task}` the transfer model is worse than the "
                     f"no-transfer baseline beyond noise ({primary} gain "
                     f"{format_score(verdict.gain.get(primary), signed=True)}, 95% CI entirely below 0). The "
                     f"baseline model is the better choice for this task on the test split.{shipped}")
    elif verdict.negative_transfer is None:
        lines.append("- No baseline was trained, so whether the source stage helped is unknown.")
    above, below = verdict.disagreement()
    if above and below:
        lines.append(f"- **Mixed result**: the transfer model gains beyond noise on {', '.join(above)} but loses "
                     f"beyond noise on {', '.join(below)} (95% CIs); look at the per-class results before relying "
                     f"on one number.")
    max_length = (config.get("model") or {}).get("max_length", "the training length")
    return lines + [f"- Trained and tested on `{task}` only; expect lower scores on text from other domains.",
                    f"- Texts longer than {max_length} tokens are truncated.",
                    "- The figures above come from one run with one seed.", ""]


def _merge_body(existing: str, body: str) -> str:
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + body + tail
    existing = existing.strip()
    return (existing + "\n\n" + body + "\n") if existing else body + "\n"


def render_card(results: Results, config: Dict[str, Any], repo_id: Optional[str] = None,
                existing: Optional[str] = None, arm: Optional[str] = None) -> str:
    """The card's full text for ``arm``'s model (default: the shipped one); ``existing`` (an earlier
    README.md) is updated, not replaced."""
    results = as_run_results(results)
    name = repo_id.split("/")[-1] if repo_id else f"{results.target.task}-classifier"
    data = card_data(results, config, model_name=name, arm=arm)
    body = card_body(results, config, repo_id=repo_id, arm=arm)
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


def write_card(model_dir, results: Results, config: Dict[str, Any], repo_id: Optional[str] = None,
               previous: Optional[Path] = None, arm: Optional[str] = None) -> Path:
    """Write (or update) ``model_dir/README.md`` for ``arm``'s model (default: the shipped one); call
    it on the main process only.

    ``previous`` names an earlier card to update when it is not ``model_dir/README.md`` itself
    (a run saves into a temp folder that replaces ``model/``).
    """
    path = Path(model_dir) / "README.md"
    source = Path(previous) if previous is not None and Path(previous).is_file() else path
    existing = source.read_text() if source.is_file() else None
    atomic_write_text(path, render_card(results, config, repo_id=repo_id, existing=existing, arm=arm))
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
