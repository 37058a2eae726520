"""One small trained transfer run shared by the publish/predict/evaluate tests (built once per session)."""

from pathlib import Path

from conftest import REPO

_RUN = {}


def trained_run(tmp_path_factory, tiny_bert_dir) -> Path:
    """A real run of the embedded recipe on the tiny BERT: results.json, model/ (with its card), config.yaml.

    The learning rate is high so the tiny model learns enough to give different labels to
    different reviews (order and label checks then mean something). ``ship: transfer``: the tests
    read the transfer model as ``model/`` (its card's lineage, its metrics), so which arm that is
    must not hang on which of a tiny random model's two arms validates better.
    """
    if "path" not in _RUN:
        from textransfer import RunConfig, run_transfer

        cfg = RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml", overrides=[
            f"model.name_or_path={tiny_bert_dir}", "model.max_length=32",
            "source_training.num_epochs=1", "target_training.num_epochs=3",
            "source_training.batch_size=32", "target_training.batch_size=16",
            "target_training.learning_rate=3e-3", "target_training.early_stopping_patience=null",
            "noise_resamples=200", "ship=transfer"])
        out = tmp_path_factory.mktemp("published") / "run"
        run_transfer(cfg, output_dir=out)
        _RUN["path"] = out
    return _RUN["path"]
