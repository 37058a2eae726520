"""The model card: Hub-format metadata with the run's real numbers, lineage, and update-not-clobber."""

import copy
import json

import pytest
from huggingface_hub import ModelCard, metadata_load

from published_run import trained_run
from textransfer.publish.card import BEGIN, END, render_card, write_card


@pytest.fixture
def run_dir(tmp_path_factory, tiny_bert_dir):
    return trained_run(tmp_path_factory, tiny_bert_dir)


def _load(run_dir):
    import yaml

    return json.loads((run_dir / "results.json").read_text()), yaml.safe_load((run_dir / "config.yaml").read_text())


def test_run_writes_a_card_whose_metadata_holds_the_real_numbers(run_dir):
    results, config = _load(run_dir)
    path = run_dir / "model" / "README.md"
    meta = metadata_load(path)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "textransfer" in meta["tags"]
    card = ModelCard.load(path)
    evals = {e.metric_type: e for e in card.data.eval_results}
    # the shipped model's numbers: the arm the run chose on validation (ship: best)
    shipped = results["target"][results["selected"]["arm"]]["metrics"]
    assert meta["textransfer"]["shipped"] == results["selected"]["arm"]
    assert set(evals) == set(shipped)
    for name, value in shipped.items():
        assert evals[name].metric_value == pytest.approx(value, abs=5e-5)
        assert evals[name].dataset_name == "reviews" and evals[name].task_type == "text-classification"
    assert meta["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    text = card.text
    # lineage: base encoder -> source -> target, strategy, freezing
    assert f"`{results['model']}` (pretrained encoder) -> source task `news` (4 labels) -> target task `reviews`" in text
    assert "Transfer strategy: `finetune`" in text and "nothing frozen" in text
    # transfer beside baseline, the gain and its interval, as measured
    acc = results["target"]["transfer"]["metrics"]["accuracy"]
    base = results["target"]["baseline"]["metrics"]["accuracy"]
    ci = results["gain_ci"]["accuracy"]
    assert (f"| accuracy | {acc:.4f} | {base:.4f} | {results['gain']['accuracy']:+.4f} | "
            f"[{ci['low']:+.4f}, {ci['high']:+.4f}] |") in text
    assert "| 0 | negative |" in text and "| 1 | positive |" in text
    assert 'pipeline("text-classification"' in text
    # a local base model is named in the text but is not a Hub id for `base_model`
    assert "base_model" not in meta


def test_hub_ids_strategy_freezing_and_negative_transfer(run_dir):
    results, config = _load(run_dir)
    results = copy.deepcopy(results)
    results["model"] = "sentence-transformers/all-MiniLM-L6-v2"
    results["strategy"] = "gradual_unfreeze"
    results["negative_transfer"] = True
    results["gain"]["accuracy"] = -0.1234
    config = copy.deepcopy(config)
    config["target"] = {"name": "sst2", "path": "stanfordnlp/sst2", "test_split": "validation", "data_files": None}
    config["target_training"]["freeze_layers"] = 2
    text = render_card(results, config, repo_id="me/neg")
    card = ModelCard(text)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.datasets == ["stanfordnlp/sst2"]
    assert card.data.eval_results[0].dataset_type == "stanfordnlp/sst2"
    assert card.data.model_name == "neg"
    assert "Transfer strategy: `gradual_unfreeze`" in text and "bottom 2 encoder layers frozen" in text
    assert "**Negative transfer**" in text and "-0.1234" in text and "baseline model is the better choice" in text
    assert 'model="me/neg"' in text


def test_existing_card_is_updated_not_clobbered(run_dir, tmp_path):
    results, config = _load(run_dir)
    folder = tmp_path / "model"
    folder.mkdir()
    first = ModelCard(render_card(results, config))
    first.data.license = "mit"  # a user's edits: metadata, and text around the generated part
    first.data.tags = ["my-tag"]
    first.text = "# My notes\n\nHand-written intro.\n\n" + first.text + "\n## Citation\n\nMine.\n"
    (folder / "README.md").write_text(str(first))

    newer = copy.deepcopy(results)
    newer["target"]["transfer"]["metrics"]["accuracy"] = 0.987654
    write_card(folder, newer, config)
    text = (folder / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.license == "mit" and "my-tag" in card.data.tags and "textransfer" in card.data.tags
    assert "Hand-written intro." in text and "## Citation\n\nMine." in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| accuracy | 0.9877 |" in text
    assert {e.metric_type: e.metric_value for e in card.data.eval_results}["accuracy"] == 0.9877
