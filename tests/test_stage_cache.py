"""The stage cache: a finished source stage or baseline is reused by later runs and by `compare`,
bit-identical to training it again; its key changes with what determines the stage and only that;
`--no-cache`, `textransfer cache info` and `clear`."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from textransfer import RunConfig, run_transfer
from textransfer.cli import main
from textransfer.run.transfer import Timings, prepare_run
from textransfer.strategies import base as strategies_base
from textransfer.training import stage_cache
from textransfer.training.stage_cache import StageCache, default_cache_dir, stage_key

TINY = ["source_training.num_epochs=1", "target_training.num_epochs=1", "source.max_train_samples=64",
        "target.max_train_samples=48", "noise_resamples=50"]
# what may differ between a run that trained a stage and one that took it from the cache
RUN_LOCAL = ("timings", "train_samples_per_s", "train_time_s", "train_time_per_epoch_s", "from_cache", "baseline_reused")


def _config(tiny_bert_dir, *overrides):
    return RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml",
                               overrides=[f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", *TINY,
                                          *overrides])


def _spy_stages(monkeypatch):
    trained = []
    real = strategies_base.train_stage

    def spy(name, model, spec, env):
        trained.append(name)
        return real(name, model, spec, env)

    monkeypatch.setattr(strategies_base, "train_stage", spy)
    return trained


def _without_run_local(value):
    if isinstance(value, dict):
        return {k: _without_run_local(v) for k, v in value.items() if k not in RUN_LOCAL}
    if isinstance(value, list):
        return [_without_run_local(v) for v in value]
    return value


def _weights(folder: Path):
    return load_file(str(folder / "model.safetensors"))


def test_a_cached_run_matches_a_fresh_run(tiny_bert_dir, tmp_path, monkeypatch):
    trained = _spy_stages(monkeypatch)
    fresh = run_transfer(_config(tiny_bert_dir, "stage_cache=false"), output_dir=tmp_path / "fresh")
    assert trained == ["source", "target", "baseline"]
    assert not StageCache().stages.exists()  # off: nothing stored
    run_transfer(_config(tiny_bert_dir), output_dir=tmp_path / "store")
    assert len(StageCache().entries()) == 2  # the source stage and the baseline
    trained.clear()
    cached = run_transfer(_config(tiny_bert_dir), output_dir=tmp_path / "cached")
    assert trained == ["target"]  # source and baseline came from the cache
    keys = {e.key for e in StageCache().entries()}
    assert cached["source"]["from_cache"] in keys and cached["target"]["baseline"]["from_cache"] in keys
    assert "source_s" in cached["timings"] and cached["timings"]["source_s"] == 0.0
    assert _without_run_local(cached) == _without_run_local(fresh)
    for arm in ("model", "models/baseline" if (tmp_path / "fresh" / "models" / "baseline").exists() else "models/transfer"):
        a, b = _weights(tmp_path / "fresh" / arm), _weights(tmp_path / "cached" / arm)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), arm


def test_compare_trains_the_common_source_stage_once(tiny_bert_dir, tmp_path, monkeypatch):
    trained = _spy_stages(monkeypatch)
    argv = ["compare", str(REPO / "recipes" / "news_to_sentiment.yaml"), "--strategies", "finetune,l2sp,features,scratch",
            f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", *TINY]
    assert main(argv + ["--output-dir", str(tmp_path / "cached")]) == 0
    assert trained.count("source") == 1 and trained.count("baseline") == 1
    l2sp = json.loads((tmp_path / "cached" / "l2sp" / "results.json").read_text())
    finetune = json.loads((tmp_path / "cached" / "finetune" / "results.json").read_text())
    assert "from_cache" not in finetune["source"] and l2sp["source"]["from_cache"]
    assert l2sp["source"]["metrics"] == finetune["source"]["metrics"]
    trained.clear()
    assert main(argv + ["--output-dir", str(tmp_path / "fresh"), "--no-cache"]) == 0
    assert trained.count("source") == 3  # finetune, l2sp and features each trained it
    fresh = json.loads((tmp_path / "fresh" / "comparison.json").read_text())
    cached = json.loads((tmp_path / "cached" / "comparison.json").read_text())
    assert {n: r["metrics"] for n, r in fresh["strategies"].items()} == \
        {n: r["metrics"] for n, r in cached["strategies"].items()}


def _source_key(cfg: RunConfig) -> str:
    run = prepare_run(cfg, None, Timings())
    run.stage_cache = StageCache()
    return stage_key(run.cache_material("source", "source", cfg.source_training))


def _csv(path: Path, rows):
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    return str(path)


def test_the_key_follows_what_determines_the_stage(tiny_bert_dir, tmp_path):
    rows = [(f"sample text number {i}", ["a", "b"][i % 2]) for i in range(40)]
    source = _csv(tmp_path / "source.csv", rows)
    target = _csv(tmp_path / "target.csv", rows)

    def key(*overrides, source_file=source, target_file=target):
        return _source_key(_config(tiny_bert_dir, f"source.data_files={source_file}", f"target.data_files={target_file}",
                                   "source.label_names=null", "target.label_names=null", *overrides))

    base = key()
    assert key() == base
    assert key("output_dir=/somewhere/else", "target_training.learning_rate=0.1") == base  # not the source stage's
    assert key(target_file=_csv(tmp_path / "other_target.csv", rows[:30])) == base
    changed = dict(seed=key("seed=7"), lr=key("source_training.learning_rate=0.001"),
                   length=key("model.max_length=16"), sample=key("source.max_train_samples=20"),
                   content=key(source_file=_csv(tmp_path / "edited.csv", [("an edited row", "a")] + rows[1:])))
    assert base not in changed.values() and len(set(changed.values())) == len(changed), changed
    # the same bytes under another name and folder are the same data
    moved = tmp_path / "moved"
    moved.mkdir()
    assert key(source_file=_csv(moved / "copy.csv", rows)) == base


def _with_threads(count, action):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return action()
    finally:
        torch.set_num_threads(before)


def test_the_key_follows_what_orders_the_float_sums(tiny_bert_dir, tmp_path, monkeypatch):
    """Another intra-op thread count or CPU sums in another order (1.4e-6 apart on MiniLM's demo
    stage): a stage trained under one is not reused under the other."""
    cfg = _config(tiny_bert_dir)
    one, two = (_with_threads(n, lambda: _source_key(cfg)) for n in (1, 2))
    assert one != two and _with_threads(1, lambda: _source_key(cfg)) == one
    with monkeypatch.context() as patch:
        patch.setattr(stage_cache, "cpu_model", lambda: "another CPU")
        assert _with_threads(1, lambda: _source_key(cfg)) != one
        patch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
        assert stage_cache.arithmetic_material(torch.device("cuda", 0)) == {"gpu": "NVIDIA H100 80GB HBM3"}
    trained = _spy_stages(monkeypatch)
    for threads, folder in ((1, "a"), (2, "b"), (1, "c")):
        _with_threads(threads, lambda: run_transfer(_config(tiny_bert_dir, "baseline=false"), output_dir=tmp_path / folder))
    assert trained == ["source", "target", "source", "target", "target"]  # the third run reuses the first's


def test_pretraining_before_the_source_stage_is_cached_with_it(tiny_bert_dir, tmp_path, monkeypatch):
    pretrain = ["adaptive_pretraining.before=[source]", "adaptive_pretraining.max_steps=2", "baseline=false"]
    first = run_transfer(_config(tiny_bert_dir, *pretrain), output_dir=tmp_path / "a")
    trained = _spy_stages(monkeypatch)
    second = run_transfer(_config(tiny_bert_dir, *pretrain), output_dir=tmp_path / "b")
    assert trained == ["target"] and second["source"]["from_cache"]
    assert second["adaptive_pretraining"] == first["adaptive_pretraining"]
    assert second["target"]["transfer"]["metrics"] == first["target"]["transfer"]["metrics"]
    # without the pretraining it is another stage: trained, not taken from the entry above
    trained.clear()
    run_transfer(_config(tiny_bert_dir, "baseline=false"), output_dir=tmp_path / "c")
    assert trained == ["source", "target"]


def test_a_half_written_entry_is_not_trusted(tiny_bert_dir, tmp_path, monkeypatch):
    run_transfer(_config(tiny_bert_dir, "baseline=false"), output_dir=tmp_path / "a")
    [entry] = StageCache().entries()
    (StageCache().entry(entry.key) / "model" / "model.safetensors").write_bytes(b"truncated")
    trained = _spy_stages(monkeypatch)
    run_transfer(_config(tiny_bert_dir, "baseline=false"), output_dir=tmp_path / "b")
    assert trained == ["source", "target"]


def test_cache_info_and_clear(tiny_bert_dir, tmp_path, capsys):
    custom = tmp_path / "my-cache"
    run_transfer(_config(tiny_bert_dir, f"stage_cache_dir={custom}"), output_dir=tmp_path / "a")
    assert not StageCache().stages.exists() and StageCache(custom).stages.is_dir()
    assert main(["cache", "info", "--cache-dir", str(custom)]) == 0
    out = capsys.readouterr().out
    assert f"stage cache {custom}: 2 stage(s)" in out and "source" in out and "news" in out and "reviews" in out
    size = sum(e.bytes for e in StageCache(custom).entries())
    assert size > 0 and f"{size / 1e6:.1f} MB" in out
    assert main(["cache", "clear", "--cache-dir", str(custom)]) == 0
    assert "removed" in capsys.readouterr().out and StageCache(custom).entries() == []
    assert main(["cache", "info", "--cache-dir", str(custom)]) == 0
    assert ": 0 stage(s), 0.0 MB" in capsys.readouterr().out


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTRANSFER_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("TEXTRANSFER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "textransfer"


@pytest.mark.parametrize("flag", ["--no-cache"])
def test_no_cache_flag_is_an_override(flag):
    from textransfer.cli import parse
    from textransfer.cli.commands import run_config

    args = parse(["run", str(REPO / "recipes" / "news_to_sentiment.yaml"), "--output-dir", "x", flag])
    _, overrides, cfg, _ = run_config(args)
    assert "stage_cache=false" in overrides and cfg.stage_cache is False


def test_the_key_follows_the_package_code(tiny_bert_dir, tmp_path, monkeypatch):
    """An editable install keeps its version number while its code changes: a stage trained by
    other code is not reused."""
    tree = tmp_path / "package"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.py").write_text("x = 1\n")
    (tree / "sub" / "b.py").write_text("y = 2\n")
    before = stage_cache.code_digest(tree)
    assert stage_cache.code_digest(tree) == before
    (tree / "sub" / "b.py").write_text("y = 3\n")
    edited = stage_cache.code_digest(tree)
    (tree / "sub" / "b.py").rename(tree / "b.py")  # the same bytes in another file
    assert len({before, edited, stage_cache.code_digest(tree)}) == 3
    assert stage_cache.package_code_digest() == stage_cache.code_digest(stage_cache.PACKAGE_ROOT)

    cfg = _config(tiny_bert_dir)
    base = _source_key(cfg)
    monkeypatch.setattr(stage_cache, "package_code_digest", lambda: "other code")
    assert _source_key(cfg) != base
