"""Push to the Hub and load back, with the real ``huggingface_hub`` client over HTTP.

The Hub is ``tests/hub_server.py`` on 127.0.0.1 (a thread in this process). The client side runs
in a subprocess: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HUB_DISABLE_XET``, ``HF_TOKEN`` and ``HF_HOME`` into module constants when it is first
imported, and this test process has already imported it in offline mode (``conftest.py``).
Flipping those constants in place would leave other modules' copies (transformers keeps its
own) and the rest of the suite in a half-online state; a fresh interpreter with its own
environment is exactly what a user's shell gives, and it can only reach the loopback server.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from conftest import REPO
from hub_server import HubServer, Repo
from published_run import trained_run

TOKEN = "hf_testtoken_0123456789abcdefSECRET"
TEXTS = ["A wonderful little gadget, works perfectly.", "Broke after a day. Waste of money.",
         "It is fine, nothing special.", "Terrible customer service and the box was damaged."]


@pytest.fixture
def run_dir(tmp_path_factory, tiny_bert_dir):
    return trained_run(tmp_path_factory, tiny_bert_dir)


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


def hub_env(hub, home, token=TOKEN):
    """A clean environment for the client: online, but only to the loopback server."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", NO_PROXY="127.0.0.1,localhost",
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    if token:
        env["HF_TOKEN"] = token
    return env


def run_py(env, code, *args):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "textransfer.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def snapshot(folder: Path):
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_token(*places):
    for place in places:
        if isinstance(place, Path):
            for p in place.rglob("*"):
                if p.is_file():
                    assert TOKEN.encode() not in p.read_bytes(), f"token written to {p}"
        else:
            assert TOKEN not in place


LOAD = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
repo, rev = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
model = AutoModelForSequenceClassification.from_pretrained(repo, revision=rev).eval()
tok = AutoTokenizer.from_pretrained(repo, revision=rev)
texts = %r
with torch.inference_mode():
    logits = model(**tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")).logits
print(json.dumps({"id2label": {int(k): v for k, v in model.config.id2label.items()}, "logits": logits.tolist()}))
""" % (TEXTS,)


def local_logits(model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        return model(**tok(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="pt")).logits, model


def test_push_and_load_back_round_trip(run_dir, hub, tmp_path):
    before = snapshot(run_dir)
    env = hub_env(hub, tmp_path / "hf_home")
    pushed = cli(env, "push", str(run_dir), "--repo-id", "me/news-to-reviews", "--commit-message", "first upload")
    assert pushed.returncode == 0, pushed.stderr
    assert f"{hub.url}/me/news-to-reviews/commit/" in pushed.stdout

    # the protocol the client really speaks, each call carrying the token
    paths = [(r["method"], r["path"]) for r in hub.state.log]
    for call in [("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
                 ("POST", "/api/models/me/news-to-reviews/preupload/main"),
                 ("POST", "/me/news-to-reviews.git/info/lfs/objects/batch"),
                 ("POST", "/api/models/me/news-to-reviews/commit/main")]:
        assert call in paths
    assert any(m == "PUT" and p.startswith("/lfs-upload/") for m, p in paths)
    api_calls = [r for r in hub.state.log if not r["path"].startswith("/lfs-upload/")]
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in api_calls)

    files = hub.files("me/news-to-reviews")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(files)
    assert files["model.safetensors"] == (run_dir / "model" / "model.safetensors").read_bytes()
    assert json.loads(files["config.json"])["id2label"] == {"0": "negative", "1": "positive"}
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert 'model="me/news-to-reviews"' in card.text  # the usage snippet names the repo
    assert hub.state.repos["me/news-to-reviews"].messages[hub.state.repos["me/news-to-reviews"].branches["main"]] \
        == "first upload"

    # load it back from the endpoint with plain transformers: same label names, same outputs
    loaded = run_py(env, LOAD, "me/news-to-reviews")
    assert loaded.returncode == 0, loaded.stderr
    remote = json.loads(loaded.stdout.strip().splitlines()[-1])
    logits, model = local_logits(run_dir / "model")
    assert {int(k): v for k, v in remote["id2label"].items()} == {0: "negative", 1: "positive"} == model.config.id2label
    assert torch.allclose(torch.tensor(remote["logits"]), logits, atol=1e-6)
    assert torch.tensor(remote["logits"]).argmax(-1).tolist() == logits.argmax(-1).tolist()
    assert any(r["method"] == "GET" and r["path"].endswith("/resolve/" + hub.state.repos["me/news-to-reviews"]
               .branches["main"] + "/model.safetensors") for r in hub.state.log)

    # the token is sent in headers only: never in a file, a log line, the card or results.json
    assert snapshot(run_dir) == before
    assert_no_token(run_dir, tmp_path / "hf_home", pushed.stdout, pushed.stderr, loaded.stdout, loaded.stderr,
                    *[b.decode("latin-1") for b in files.values()])


def test_failed_push_changes_nothing_and_a_retry_goes_through(run_dir, hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    before = snapshot(run_dir)
    hub.state.fail_next["commit"] = 1  # the commit call answers 500 once
    failed = cli(env, "push", str(run_dir), "--repo-id", "me/flaky")
    assert failed.returncode == 2
    assert "error: push to 'me/flaky' failed" in failed.stderr and "500" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert snapshot(run_dir) == before
    assert hub.files("me/flaky") == {}  # the repo was created, but nothing was committed

    again = cli(env, "push", str(run_dir), "--repo-id", "me/flaky")
    assert again.returncode == 0, again.stderr
    assert "README.md" in hub.files("me/flaky") and "model.safetensors" in hub.files("me/flaky")
    assert snapshot(run_dir) == before
    assert_no_token(failed.stderr, failed.stdout, again.stderr, again.stdout, run_dir)


@pytest.mark.slow  # four client subprocesses (each imports torch + transformers): ~30 s
def test_existing_repo_private_flag_and_revision(run_dir, hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    hub.state.repos["me/existing"] = Repo("me/existing", private=False)  # made earlier, e.g. on the website

    # the library call, into an existing repo and a new branch
    code = """
    import sys
    from textransfer.publish.hub import push_to_hub
    print(push_to_hub(sys.argv[1], "me/existing", revision="v1"))
    """
    lib = run_py(env, code, str(run_dir))
    assert lib.returncode == 0, lib.stderr
    assert ("POST", "/api/models/me/existing/commit/v1") in [(r["method"], r["path"]) for r in hub.state.log]
    assert "config.json" in hub.files("me/existing", "v1")
    assert hub.files("me/existing", "main") == {}  # main untouched
    loaded = run_py(env, LOAD, "me/existing", "v1")
    assert loaded.returncode == 0, loaded.stderr

    # a private repo: created private, readable with the token only
    private = cli(env, "push", str(run_dir / "model"), "--repo-id", "me/secret", "--private")
    assert private.returncode == 0, private.stderr
    assert hub.state.repos["me/secret"].private is True
    create = [r for r in hub.state.log if r["path"] == "/api/repos/create"][-1]
    assert create["headers"].get("authorization") == f"Bearer {TOKEN}"
    anonymous = run_py(hub_env(hub, tmp_path / "anon", token=None), LOAD, "me/secret")
    assert anonymous.returncode != 0
    with_token = run_py(env, LOAD, "me/secret")
    assert with_token.returncode == 0, with_token.stderr
    # a bare model folder gets a minimal card with its labels
    card = ModelCard(hub.files("me/secret")["README.md"].decode())
    assert "| 1 | positive |" in card.text


def test_push_without_token_says_how_to_log_in(run_dir, hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home", token=None)
    result = cli(env, "push", str(run_dir), "--repo-id", "me/nothing")
    assert result.returncode == 2
    assert "no Hugging Face token" in result.stderr and "HF_TOKEN" in result.stderr
    assert hub.state.log == []  # nothing was sent


def test_run_with_push_to_hub_option(hub, tmp_path, tiny_bert_dir):
    env = hub_env(hub, tmp_path / "hf_home")
    out = tmp_path / "run"
    result = cli(env, "run", str(REPO / "recipes" / "news_to_sentiment.yaml"), "--output-dir", str(out),
                 f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", "source_training.num_epochs=1",
                 "target_training.num_epochs=1", "noise_resamples=50", "push_to_hub=true",
                 "hub_repo_id=me/from-run", "hub_private=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pushed to" in result.stdout
    files = hub.files("me/from-run")
    assert hub.state.repos["me/from-run"].private is True
    assert files["model.safetensors"] == (out / "model" / "model.safetensors").read_bytes()
    # the card on the Hub is the run's card, with the repo id filled in; the local one is the same apart from it
    remote = files["README.md"].decode()
    local = (out / "model" / "README.md").read_text()
    assert "model-index" in remote and "model-index" in local
    results = json.loads((out / "results.json").read_text())
    assert f"{results['target']['transfer']['metrics']['accuracy']:.4f}" in remote
    assert_no_token(out, tmp_path / "hf_home", result.stdout, result.stderr)
