"""``load_task`` on every real corpus in ../shared/data, from a ``TaskConfig`` alone.

Each test checks real content against ../shared/data/README.md: row counts, label names and
ids, joined text, 1-based labels, filters, seeded splits, per-class sampling. The corpora are
required: without them these tests fail (they are not skipped), since CI always has them.
"""

from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from textransfer import RunConfig, TaskConfig, load_task  # noqa: E402
from textransfer.errors import DataError  # noqa: E402

from conftest import REPO  # noqa: E402

AG_LABELS = ["world", "sports", "business", "tech"]
AG_OFFICIAL_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
SENTIMENT = ["negative", "positive"]


def rows_of(task_data):
    """All examples of all splits as {source row: (text, label id, split)}."""
    out = {}
    for role, ds in task_data.splits.items():
        for ex in ds:
            assert ex["row"] not in out, f"row {ex['row']} is in two splits"
            out[ex["row"]] = (ex["text"], ex["labels"], role)
    return out


def labels(ds):
    return list(ds.with_format("arrow")["labels"].to_pylist())


def row_set(ds):
    return set(ds.with_format("arrow")["row"].to_pylist())


# ---------------------------------------------------------------------------- AG News
def ag_subset_config(data_dir, **kw):
    return TaskConfig(
        name="ag_news",
        data_files={role: str(data_dir / "ag_news_subset" / f"{name}.csv")
                    for role, name in (("train", "train"), ("validation", "dev"), ("test", "test"))},
        column_names=["text", "label"],
        label_names=AG_LABELS,
        **kw,
    )


def test_ag_news_subset_splits_labels_and_text(data_dir):
    data = load_task(ag_subset_config(data_dir))
    assert data.info["rows"] == {"train": 5000, "validation": 1000, "test": 1000}
    assert data.info["carved"] == []
    assert data.label_names == AG_LABELS
    assert data.num_labels == 4
    assert data.id2label == {0: "world", 1: "sports", 2: "business", 3: "tech"}
    for role, ds in data.splits.items():
        assert set(ds.column_names) == {"text", "labels", "row"}
        assert ds.features["labels"].names == AG_LABELS
        ys = labels(ds)
        assert set(ys) == {0, 1, 2, 3}, role  # every class present, ids 0..3
        assert sum(data.info["class_counts"][role]) == len(ds)
    # Without carving, train keeps the file's order; first line of train.csv: `"BEA buzzing ...",3`.
    first = data.splits["train"][0]
    assert first["row"] == 1
    assert first["text"].startswith("BEA buzzing about Beehive BURLINGAME, CALIF.-- BEA Systems")
    assert data.splits["train"].features["labels"].int2str(first["labels"]) == "tech"
    second = data.splits["train"][1]
    assert second["text"].startswith("Saudi Violence Pushes Oil Prices Higher")
    assert AG_LABELS[second["labels"]] == "business"
    assert data.info["class_counts"]["train"] == [1259, 1257, 1281, 1203]


def test_ag_news_subset_dev_file_named_dev_is_used_as_validation(data_dir):
    task = TaskConfig(
        name="ag_news",
        data_files={s: str(data_dir / "ag_news_subset" / f"{s}.csv") for s in ("train", "dev", "test")},
        column_names=["text", "label"],
        label_names=AG_LABELS,
        validation_split="dev",
    )
    data = load_task(task)
    assert data.info["rows"] == {"train": 5000, "validation": 1000, "test": 1000}
    assert data.info["carved"] == []


def ag_official_config(data_dir, **kw):
    return TaskConfig(
        name="ag_news_official",
        data_files=str(data_dir / "ag_news" / "test.csv"),
        column_names=["label", "title", "description"],
        text_columns=["title", "description"],
        label_names=AG_OFFICIAL_LABELS,
        label_base=1,
        **kw,
    )


def test_ag_news_official_one_based_labels_and_joined_title_description(data_dir):
    data = load_task(ag_official_config(data_dir))
    assert data.label_names == AG_OFFICIAL_LABELS
    # One file, no split: test (20%) then validation (10% of the rest) carved, stratified.
    assert sorted(data.info["carved"]) == ["test", "validation"]
    assert sum(data.info["rows"].values()) == 7600
    assert data.info["rows"]["test"] == 1520
    totals = [sum(c) for c in zip(*data.info["class_counts"].values())]
    assert totals == [1900, 1900, 1900, 1900]  # 1-based 1..4 became ids 0..3
    assert data.info["class_counts"]["test"] == [380, 380, 380, 380]
    rows = rows_of(data)
    assert set(rows) == set(range(1, 7601))
    # Row 1: "3","Fears for T N pension after talks","Unions representing workers at ..."
    text, label, _ = rows[1]
    assert text == ("Fears for T N pension after talks Unions representing workers at Turner   Newall say "
                    "they are 'disappointed' after talks with stricken parent firm Federal Mogul.")
    assert label == 2 and AG_OFFICIAL_LABELS[label] == "Business"
    # Row 2: "4","The Race is On: ...","SPACE.com - TORONTO, ..."
    text, label, _ = rows[2]
    assert text.startswith("The Race is On: Second Private Team Sets Launch Date for Human Spaceflight (SPACE.com) "
                           "SPACE.com - TORONTO, Canada")
    assert AG_OFFICIAL_LABELS[label] == "Sci/Tech"


def test_ag_news_official_text_separator(data_dir):
    data = load_task(ag_official_config(data_dir, text_separator=" | "))
    text, _, _ = rows_of(data)[1]
    assert text.startswith("Fears for T N pension after talks | Unions representing workers")


def test_ag_news_official_as_its_test_split_is_never_train_and_test_at_once(data_dir):
    # The file is AG News's official *test* split; naming it `test` and training on it must not
    # evaluate on the very rows trained on: test (and validation) are carved from it instead.
    task = ag_official_config(data_dir)
    task.data_files = {"test": task.data_files}
    task.train_split = "test"
    data = load_task(task)
    assert sorted(data.info["carved"]) == ["test", "validation"]
    assert data.info["rows"] == {"train": 5472, "test": 1520, "validation": 608}
    assert not row_set(data.splits["train"]) & row_set(data.splits["test"])


# ---------------------------------------------------------------------------- SST-2
def sst2_task(data_dir, test_file: str, **options) -> TaskConfig:
    """SST-2 as its README says to read it, with ``test_file`` as the test split."""
    return TaskConfig(
        name="sst2",
        data_files={"train": str(data_dir / "sst2" / "train.tsv"), "test": str(data_dir / "sst2" / test_file)},
        quoting=3,
        text_columns=["sentence"],
        label_names=SENTIMENT,
        **options,
    )


@pytest.fixture(scope="module")
def sst2(data_dir):
    return load_task(sst2_task(data_dir, "dev.tsv", validation_fraction=0.05))


def test_sst2_train_and_labelled_dev_as_test(sst2):
    assert sst2.label_names == SENTIMENT
    assert sst2.info["carved"] == ["validation"]
    rows = sst2.info["rows"]
    assert rows["test"] == 872  # the labelled dev file
    assert rows["train"] + rows["validation"] == 67349
    assert rows["validation"] == 3368  # ceil(0.05 * 67349)
    assert sst2.info["class_counts"]["test"] == [428, 444]
    assert [a + b for a, b in zip(sst2.info["class_counts"]["train"], sst2.info["class_counts"]["validation"])] \
        == [29780, 37569]
    first = sst2.splits["test"][0]
    assert first["row"] == 1
    assert first["text"] == "it 's a charming and often affecting journey ."  # trailing space stripped
    assert SENTIMENT[first["labels"]] == "positive"
    assert sst2.splits["test"][1]["text"] == "unflinchingly bleak and desperate"
    assert sst2.splits["test"][1]["labels"] == 0
    assert not row_set(sst2.splits["train"]) & row_set(sst2.splits["validation"])


def test_sst2_test_split_without_labels_is_a_clear_data_error(data_dir):
    with pytest.raises(DataError) as err:
        load_task(sst2_task(data_dir, "test.tsv"))
    msg = str(err.value)
    assert "test.tsv" in msg and "'label'" in msg and "split 'test'" in msg
    assert "label_column" in msg and "test_split" in msg  # the options to fix
    assert "index" in msg and "sentence" in msg  # the columns the file does have


def test_sst2_dev_named_validation_used_as_test_gets_a_carved_validation(data_dir):
    # The layout of the Hub's stanfordnlp/sst2 (test labels hidden): test on `validation`.
    # Early stopping must then not select on those same rows: validation is carved from train.
    task = TaskConfig(
        name="sst2",
        data_files={"train": str(data_dir / "sst2" / "train.tsv"),
                    "validation": str(data_dir / "sst2" / "dev.tsv")},
        quoting=3,
        text_columns=["sentence"],
        label_names=SENTIMENT,
        test_split="validation",
        validation_fraction=0.01,
        max_train_samples=100,
    )
    data = load_task(task)
    assert data.info["rows"]["test"] == 872
    assert data.info["carved"] == ["validation"]
    assert data.info["rows"]["validation"] == 674  # ceil(0.01 * 67349), from train
    assert data.splits["test"][0]["text"] == "it 's a charming and often affecting journey ."
    assert max(row_set(data.splits["validation"])) > 872  # train rows, not dev rows


# ---------------------------------------------------------------------------- rt_polarity
def rt_config(data_dir, **kw):
    return TaskConfig(name="rt", data_files=str(data_dir / "rt_polarity" / "rt_polarity.csv"),
                      label_names=SENTIMENT, **kw)


@pytest.fixture(scope="module")
def rt_seed0(data_dir):
    return load_task(rt_config(data_dir, split_seed=0))


def test_rt_polarity_carved_stratified_splits(rt_seed0):
    data = rt_seed0
    assert sorted(data.info["carved"]) == ["test", "validation"]
    assert data.info["rows"] == {"train": 7676, "test": 2133, "validation": 853}
    assert sum(data.info["rows"].values()) == 10662
    for role, counts in data.info["class_counts"].items():
        assert abs(counts[0] - counts[1]) <= 1, (role, counts)  # stratified: 50/50 like the whole file
    totals = [sum(c) for c in zip(*data.info["class_counts"].values())]
    assert totals == [5331, 5331]
    rows = rows_of(data)
    assert set(rows) == set(range(1, 10663))
    text, label, _ = rows[1]
    assert text.startswith("the rock is destined to be the 21st century's new \" conan \" and that he's going")
    assert SENTIMENT[label] == "positive"


def test_rt_polarity_split_is_reproducible_with_a_seed(data_dir, rt_seed0):
    again = load_task(rt_config(data_dir, split_seed=0))
    for role in ("train", "validation", "test"):
        assert again.splits[role]["row"][:] == rt_seed0.splits[role]["row"][:], role
    other = load_task(rt_config(data_dir, split_seed=1))
    assert other.info["rows"] == rt_seed0.info["rows"]
    assert row_set(other.splits["test"]) != row_set(rt_seed0.splits["test"])
    assert abs(other.info["class_counts"]["test"][0] - other.info["class_counts"]["test"][1]) <= 1


def test_rt_polarity_fractions(data_dir):
    data = load_task(rt_config(data_dir, test_fraction=0.5, validation_fraction=0.2, split_seed=3))
    assert data.info["rows"]["test"] == 5331  # ceil(0.5 * 10662)
    assert data.info["rows"]["validation"] == 1067  # ceil(0.2 * 5331)
    assert data.info["class_counts"]["test"] in ([2665, 2666], [2666, 2665])


# ---------------------------------------------------------------------------- Amazon multi-domain
def amazon_config(data_dir, **kw):
    return TaskConfig(name="amazon", data_files=str(data_dir / "amazon_multidomain" / "all.jsonl"),
                      label_names=SENTIMENT, **kw)


def test_amazon_books_domain_by_filter(data_dir):
    data = load_task(amazon_config(data_dir, filters=["domain == 'books'"]))
    assert sum(data.info["rows"].values()) == 2000
    totals = [sum(c) for c in zip(*data.info["class_counts"].values())]
    assert totals == [1000, 1000]
    assert data.info["rows"]["test"] == 400
    # Source rows of the books domain: the file's own row numbers, kept through the filter.
    import json

    with open(data_dir / "amazon_multidomain" / "all.jsonl") as f:
        books = {i for i, line in enumerate(f, 1) if json.loads(line)["domain"] == "books"}
    assert set(rows_of(data)) == books


def test_amazon_filters_in_and_bare_word(data_dir):
    two = load_task(amazon_config(data_dir, filters=["domain in ['dvd', 'kitchen']"], test_fraction=0.25))
    assert sum(two.info["rows"].values()) == 4000
    assert two.info["rows"]["test"] == 1000
    # a bare word as the value, and two filters together: 680 five-star electronics reviews,
    # all positive (the corpus labels 4-5 stars positive, 1-2 stars negative)
    bare = load_task(amazon_config(data_dir, filters=["domain == electronics", "rating >= 5"]))
    assert [sum(c) for c in zip(*bare.info["class_counts"].values())] == [0, 680]


def test_amazon_title_and_text_joined(data_dir):
    import json

    with open(data_dir / "amazon_multidomain" / "all.jsonl") as f:
        first_book = next((i, d) for i, d in enumerate(map(json.loads, f), 1) if d["domain"] == "books")
    row, record = first_book
    everything = load_task(amazon_config(data_dir, filters=["domain == 'books'"], text_columns=["title", "text"],
                                         text_separator=". "))
    text, label, _ = rows_of(everything)[row]
    assert text == f"{record['title'].strip()}. {record['text'].strip()}"
    assert label == record["label"]


# ---------------------------------------------------------------------------- IMDB
def test_imdb_parquet(data_dir):
    task = TaskConfig(
        name="imdb",
        data_files={s: str(data_dir / "imdb" / f"{s}.parquet") for s in ("train", "test")},
        label_names=SENTIMENT,
        max_train_samples=300,
        max_eval_samples=200,
    )
    data = load_task(task)
    assert data.info["carved"] == ["validation"]
    assert data.info["rows"] == {"train": 300, "test": 200, "validation": 200}
    assert data.label_names == SENTIMENT
    for role, ds in data.splits.items():
        ys = labels(ds)
        assert set(ys) == {0, 1}, role
        texts = ds["text"][:]
        assert all(texts)
        assert sum(map(len, texts)) / len(texts) > 500  # long reviews
    # Seeded caps: the same rows again.
    again = load_task(task)
    assert again.splits["train"]["row"][:] == data.splits["train"]["row"][:]
    assert again.splits["test"]["row"][:] == data.splits["test"]["row"][:]


# ---------------------------------------------------------------------------- k per class
def test_k_per_class_exact_counts_seeded_and_deterministic(data_dir):
    data = load_task(ag_subset_config(data_dir, k_per_class=8, split_seed=5))
    assert len(data.splits["train"]) == 32
    assert Counter(labels(data.splits["train"])) == {0: 8, 1: 8, 2: 8, 3: 8}
    assert data.info["class_counts"]["train"] == [8, 8, 8, 8]
    # validation and test are untouched
    assert data.info["rows"]["validation"] == 1000 and data.info["rows"]["test"] == 1000
    again = load_task(ag_subset_config(data_dir, k_per_class=8, split_seed=5))
    assert again.splits["train"]["row"][:] == data.splits["train"]["row"][:]
    assert again.splits["train"]["text"][:] == data.splits["train"]["text"][:]
    other = load_task(ag_subset_config(data_dir, k_per_class=8, split_seed=6))
    assert row_set(other.splits["train"]) != row_set(data.splits["train"])
    assert Counter(labels(other.splits["train"])) == {0: 8, 1: 8, 2: 8, 3: 8}


def test_k_per_class_on_carved_split(data_dir, rt_seed0):
    data = load_task(rt_config(data_dir, k_per_class=16, split_seed=0))
    assert Counter(labels(data.splits["train"])) == {0: 16, 1: 16}
    # Sampling happens after carving: validation and test are those of the full run.
    assert row_set(data.splits["test"]) == row_set(rt_seed0.splits["test"])
    assert row_set(data.splits["train"]) <= row_set(rt_seed0.splits["train"])


# ---------------------------------------------------------------------------- string labels, pairs
def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_string_labels_inferred_sorted_and_declared_order(tmp_path):
    lines = ["text,label"] + [f"review number {i},{'pos' if i % 3 else 'neg'}" for i in range(60)]
    f = write(tmp_path / "reviews.csv", "\n".join(lines) + "\n")
    inferred = load_task(TaskConfig(name="r", data_files=f))
    assert inferred.label_names == ["neg", "pos"]  # sorted when not declared
    declared = load_task(TaskConfig(name="r", data_files=f, label_names=["pos", "neg"]))
    assert declared.label_names == ["pos", "neg"]  # declared order is id order
    for data in (inferred, declared):
        for ds in data.splits.values():
            for ex in ds:
                i = int(ex["text"].split()[-1])
                assert data.label_names[ex["labels"]] == ("pos" if i % 3 else "neg")


def test_int_labels_label_names_order(tmp_path):
    lines = ["text,label"] + [f"item {i},{i % 3}" for i in range(30)]
    f = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    data = load_task(TaskConfig(name="t", data_files=f, label_names=["c", "a", "b"]))
    assert data.label_names == ["c", "a", "b"]
    for ds in data.splits.values():
        for ex in ds:
            assert ex["labels"] == int(ex["text"].split()[-1]) % 3
    inferred = load_task(TaskConfig(name="t", data_files=f))
    assert inferred.label_names == ["0", "1", "2"]


def test_text_pairs(tmp_path):
    lines = ["premise,hypothesis,label"] + [
        f"a man plays guitar {i},{'a person makes music' if i % 2 else 'nobody is playing'} {i},"
        f"{'entailment' if i % 2 else 'contradiction'}" for i in range(40)]
    f = write(tmp_path / "pairs.csv", "\n".join(lines) + "\n")
    data = load_task(TaskConfig(name="nli", data_files=f, text_columns=["premise"], text_pair_column="hypothesis",
                                label_names=["entailment", "contradiction"]))
    assert data.has_pair
    for ds in data.splits.values():
        assert set(ds.column_names) == {"text", "text_pair", "labels", "row"}
        for ex in ds:
            i = ex["row"] - 1
            assert ex["text"] == f"a man plays guitar {i}"
            assert ex["text_pair"] == f"{'a person makes music' if i % 2 else 'nobody is playing'} {i}"
            assert ex["labels"] == (0 if i % 2 else 1)


def test_tsv_and_json_formats_and_folder_path(tmp_path):
    tsv = write(tmp_path / "a.tsv", "text\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(20)))
    data = load_task(TaskConfig(name="a", data_files=tsv))
    assert sum(data.info["rows"].values()) == 20
    folder = tmp_path / "folder"
    folder.mkdir()
    for split, n in (("train", 30), ("validation", 6), ("test", 8)):
        write(folder / f"{split}.jsonl", "".join(f'{{"text": "t {i}", "label": {i % 2}}}\n' for i in range(n)))
    data = load_task(TaskConfig(name="f", path=str(folder)))
    assert data.info["rows"] == {"train": 30, "validation": 6, "test": 8}
    assert data.info["carved"] == []


# ---------------------------------------------------------------------------- recipes
RECIPE_CAPS = [
    "source.max_train_samples=64", "source.max_eval_samples=32",
    "target.max_train_samples=64", "target.max_eval_samples=32",
]


@pytest.mark.parametrize("recipe", ["ag_news_to_sst2", "ag_news_to_rotten_tomatoes"])
def test_real_corpus_recipes_load_from_any_directory(recipe, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data paths resolve against the recipe's folder
    cfg = RunConfig.from_yaml(REPO / "recipes" / f"{recipe}.yaml", overrides=RECIPE_CAPS)
    assert cfg.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.model.max_length == 128
    for task in (cfg.source, cfg.target):
        files = task.data_files if isinstance(task.data_files, dict) else {"train": task.data_files}
        for path in files.values():
            assert Path(path).is_file(), path
            assert Path(path).resolve().is_relative_to(data_dir.resolve()), path
    source = load_task(cfg.source)
    assert source.label_names == AG_LABELS
    assert source.info["rows"] == {"train": 64, "validation": 32, "test": 32}
    assert source.info["carved"] == []
    target = load_task(cfg.target)
    assert target.label_names == SENTIMENT
    assert target.info["rows"] == {"train": 64, "validation": 32, "test": 32}
    if recipe == "ag_news_to_sst2":
        # the final metrics are on the labelled dev file, validation comes from train
        assert Path(cfg.target.data_files["test"]).name == "dev.tsv"
        assert "test.tsv" not in str(cfg.target.data_files)
        assert target.info["carved"] == ["validation"]
        assert max(row_set(target.splits["test"])) <= 872
    else:
        assert sorted(target.info["carved"]) == ["test", "validation"]


def test_real_corpus_recipes_budgets():
    for recipe in ("ag_news_to_sst2", "ag_news_to_rotten_tomatoes"):
        cfg = RunConfig.from_yaml(REPO / "recipes" / f"{recipe}.yaml")
        assert cfg.source.max_train_samples == 2000 and cfg.target.max_train_samples == 2000
        assert cfg.source_training.num_epochs == 2 and cfg.target_training.num_epochs == 2


def test_sst2_recipe_full_target(data_dir):
    cfg = RunConfig.from_yaml(REPO / "recipes" / "ag_news_to_sst2.yaml")
    target = load_task(cfg.target)
    assert target.info["rows"]["test"] == 872
    assert target.info["rows"]["train"] == 2000
    assert target.info["class_counts"]["test"] == [428, 444]


def test_hub_recipe_parses_with_hub_ids():
    cfg = RunConfig.from_yaml(REPO / "recipes" / "hub_ag_news_to_sst2.yaml")
    assert cfg.source.path == "ag_news" and cfg.source.data_files is None
    assert cfg.source.test_split == "test"
    assert cfg.target.path == "stanfordnlp/sst2" and cfg.target.data_files is None
    assert cfg.target.text_columns == ["sentence"]
    assert cfg.target.test_split == "validation"
    text = (REPO / "recipes" / "hub_ag_news_to_sst2.yaml").read_text()
    assert "NOT RUNNABLE" in text


def test_split_of_several_files_resolved_against_the_config(tmp_path, monkeypatch):
    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    write(data / "part1.csv", "text,label\n" + "".join(f"first {i},{i % 2}\n" for i in range(30)))
    write(data / "part2.csv", "text,label\n" + "".join(f"second {i},{i % 2}\n" for i in range(20)))
    write(data / "dev.csv", "text,label\n" + "".join(f"dev {i},{i % 2}\n" for i in range(10)))
    cfg = tmp_path / "project" / "run.yaml"
    cfg.write_text("target:\n  name: t\n  data_files:\n    train: [data/part1.csv, data/part2.csv]\n"
                   "    dev-2024: data/dev.csv\n  validation_split: dev-2024\n  label_names: [even, odd]\n")
    monkeypatch.chdir(tmp_path)
    task = RunConfig.from_yaml(cfg).target
    assert all(Path(p).is_file() for p in task.data_files["train"])
    loaded = load_task(task)
    # any split name (datasets itself only takes \w+ names), the two files as one train split
    assert loaded.info["rows"]["validation"] == 10
    assert loaded.info["rows"]["train"] + loaded.info["rows"]["test"] == 50
    train_test_rows = row_set(loaded.splits["train"]) | row_set(loaded.splits["test"])
    assert train_test_rows == set(range(1, 51))  # rows numbered over both files
    texts = {t for ds in (loaded.splits["train"], loaded.splits["test"]) for t in ds["text"][:]}
    assert "first 0" in texts and "second 19" in texts


def test_data_with_its_own_row_column(tmp_path):
    f = write(tmp_path / "t.csv", "row,text,label\n" + "".join(f"{100 + i},text {i},{i % 2}\n" for i in range(20)))
    data = load_task(TaskConfig(name="t", data_files=f))
    rows = rows_of(data)
    assert set(rows) == set(range(1, 21))  # our 1-based row numbers, not the file's column
    assert rows[3][0] == "text 2"


def test_domain_shift_recipe_is_the_benchmarks_best_method(data_dir):
    """recipes/amazon_books_to_kitchen.yaml is benchmarks/domain_shift.py's dapt_self_training_3rounds
    on books -> kitchen, setting for setting, and reads the two domains' splits the benchmark reads."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("domain_shift", REPO / "benchmarks" / "domain_shift.py")
    domain_shift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(domain_shift)
    args = domain_shift.make_parser().parse_args(["--data-dir", str(data_dir), "--out", "unused.json"])
    benchmark = domain_shift.run_config(args, "books", "kitchen", "dapt_self_training_3rounds").to_dict()
    recipe = RunConfig.from_yaml(REPO / "recipes" / "amazon_books_to_kitchen.yaml").to_dict()
    for config in (benchmark, recipe):
        for side in ("source", "target"):
            config[side]["data_files"] = str(Path(config[side]["data_files"]).resolve())
    # the benchmark trains its source-only column on its own; the recipe's run trains it as the baseline
    assert recipe.pop("baseline") is True and benchmark.pop("baseline") is False
    assert recipe == benchmark
    cfg = RunConfig.from_yaml(REPO / "recipes" / "amazon_books_to_kitchen.yaml")
    target = load_task(cfg.target)
    assert target.info["rows"] == {"train": 1400, "validation": 160, "test": 400}  # 20% test, 10% of the rest
    assert cfg.strategy.rounds == 3 and not cfg.strategy.target_labels
