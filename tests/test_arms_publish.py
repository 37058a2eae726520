"""Publishing both arms of a run: the card's metadata (license, language, the shipped arm, both arms'
metrics), the plots, and ``push --arm``."""

import copy
import json

import matplotlib
import pytest
from huggingface_hub import ModelCard
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from test_hub import TOKEN, assert_no_token, cli, hub, hub_env, run_dir  # noqa: F401  (fixtures)
from textransfer.publish.card import base_model_license, render_card
from textransfer.publish.report import plot_learning_curves, plot_transfer_gain

matplotlib.use("Agg")


def _load(run_dir):
    import yaml

    return json.loads((run_dir / "results.json").read_text()), yaml.safe_load((run_dir / "config.yaml").read_text())


def test_card_metadata_names_license_language_and_both_arms(run_dir):
    results, config = _load(run_dir)
    shipped = results["selected"]["arm"]
    other = "baseline" if shipped == "transfer" else "transfer"
    # the run's own cards: each says which arm it is, which one was shipped, and both arms' metrics
    for folder, arm in ((run_dir / "model", shipped), (run_dir / "models" / other, other)):
        card = ModelCard.load(folder / "README.md")
        meta = card.data.to_dict()["textransfer"]
        assert meta["arm"] == arm and meta["shipped"] == shipped and meta["selection"] == results["selected"]["reason"]
        for name in ("transfer", "baseline"):
            assert meta["metrics"][name] == pytest.approx(results["target"][name]["metrics"], abs=5e-5)
        # model-index is the card's own model's
        assert {e.metric_type: e.metric_value for e in card.data.eval_results} == \
            pytest.approx(results["target"][arm]["metrics"], abs=5e-5)

    # license: the config's when the base model's card names none (the tiny test model has no card) ...
    config = copy.deepcopy(config)
    config.update(license="mit", language=["en", "fr"])
    card = ModelCard(render_card(results, config))
    assert card.data.license == "mit" and card.data.language == ["en", "fr"]
    # ... and the base model's own card's when there is one: MiniLM's package carries it
    named = dict(results, model="sentence-transformers/all-MiniLM-L6-v2")
    assert base_model_license("sentence-transformers/all-MiniLM-L6-v2") == "apache-2.0"
    assert ModelCard(render_card(named, config)).data.license == "apache-2.0"
    assert "license" not in ModelCard(render_card(results, dict(config, license=None))).data.to_dict()


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save (they still write their files)."""
    saved = []
    real = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def test_gain_plot_has_interval_error_bars_and_labelled_axes(run_dir, tmp_path, figures):
    results, _ = _load(run_dir)
    path = plot_transfer_gain(results, tmp_path / "gain.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and (run_dir / "transfer_gain.png").is_file()
    scores, gains = figures[-1].axes
    for ax in (scores, gains):
        assert ax.get_xlabel() and ax.get_ylabel()
    assert "transfer - baseline" in gains.get_ylabel()
    bars = next(c for c in gains.containers if isinstance(c, BarContainer))
    assert bars.errorbar is not None  # the bootstrap interval, as error bars from low to high
    segments = bars.errorbar.lines[2][0].get_segments()
    names = [t.get_text() for t in gains.get_xticklabels()]
    for name, segment in zip(names, segments):
        ci = results["gain_ci"][name]
        assert [y for _, y in segment] == pytest.approx([ci["low"], ci["high"]])


def test_one_epoch_learning_curves_show_their_points(run_dir, tmp_path, figures):
    results, _ = _load(run_dir)
    one = copy.deepcopy(results)
    for stage in (one["source"], one["target"]["transfer"], one["target"]["baseline"]):
        stage["history"] = stage["history"][:1]
    path = plot_learning_curves(one, tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    for ax in figures[-1].axes:
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
        assert ax.get_xlim()[0] < 1 < ax.get_xlim()[1] and [t for t in ax.get_xticks()] == [1]
        lines = ax.get_lines()
        assert len(lines) == 3 and all(line.get_marker() not in (None, "None", "") for line in lines)
        assert len({line.get_marker() for line in lines}) == 3  # stages at one point stay apart


def test_push_an_arm_by_name(run_dir, hub, tmp_path):
    results, _ = _load(run_dir)
    shipped = results["selected"]["arm"]
    other = "baseline" if shipped == "transfer" else "transfer"
    env = hub_env(hub, tmp_path / "hf_home")
    pushed = cli(env, "push", str(run_dir), "--repo-id", f"me/{other}", "--arm", other)
    assert pushed.returncode == 0, pushed.stderr
    files = hub.files(f"me/{other}")
    assert files["model.safetensors"] == (run_dir / "models" / other / "model.safetensors").read_bytes()
    assert files["model.safetensors"] != (run_dir / "model" / "model.safetensors").read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.to_dict()["textransfer"]["arm"] == other and f'model="me/{other}"' in card.text
    assert hub.state.repos[f"me/{other}"].messages[hub.state.repos[f"me/{other}"].branches["main"]].endswith(
        f"(textransfer, {other} arm)")

    # the shipped arm by name is model/; --arm on a bare model folder is refused before anything is sent
    named = cli(env, "push", str(run_dir), "--repo-id", "me/shipped", "--arm", shipped)
    assert named.returncode == 0, named.stderr
    assert hub.files("me/shipped")["model.safetensors"] == (run_dir / "model" / "model.safetensors").read_bytes()
    sent = len(hub.state.log)
    bare = cli(env, "push", str(run_dir / "model"), "--repo-id", "me/bare", "--arm", "baseline")
    assert bare.returncode == 2 and "--arm baseline needs a run directory" in bare.stderr
    assert len(hub.state.log) == sent
    assert_no_token(pushed.stdout, pushed.stderr, named.stdout, named.stderr)
    assert TOKEN not in bare.stderr
