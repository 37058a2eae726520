"""Publishing a run's model to the Hugging Face Hub.

```
textransfer push runs/demo --repo-id me/news-to-reviews [--private] [--revision R] [--commit-message M]
textransfer push runs/demo --repo-id me/news-baseline --arm baseline   # one arm by name
```

or from the library (``push_to_hub: true`` in a recipe does the same at the end of ``run``):

```python
from textransfer.hub import push_to_hub
url = push_to_hub("runs/demo", "me/news-to-reviews", private=True)
```

One commit carries the target model (weights and ``config.json`` with the label names), the
tokenizer and the model card. A run directory pushes its shipped model (``model/``: the arm
with the better validation score, see ``run/shipping.py``); ``arm="transfer"|"baseline"``
pushes that arm, wherever the run keeps it (``model/`` or ``models/<arm>/``).

We call ``huggingface_hub``'s ``create_repo`` + ``create_commit`` ourselves rather than
``model.push_to_hub``: that needs the model loaded in memory and writes it to a temp folder
again, while the run already has the exact files on disk, and one commit lets the card go up beside them, built in memory with the repo id in its usage
snippet, without touching the local ``README.md``.

The token comes from where ``huggingface_hub`` looks (``HF_TOKEN``, then the saved
``hf auth login``); it is passed to the client and never written, printed or put in a message. A
failed push raises `HubError` naming the repo and the cause; nothing local is changed by a push,
so running it again after the fault is fixed goes through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, TextransferError
from ..files import ModelLocation, resolve_model
from ..training.results import ARMS, RunResults

# Files of a run's model folder that are not part of the model (temporary files of an
# interrupted save, editor droppings).
_SKIP_PREFIXES = (".",)


class HubError(TextransferError):
    """Pushing to (or reading from) the Hub failed; the message names the repo and the cause."""


def model_card_text(model_dir: Path, results=None, config=None, repo_id: Optional[str] = None,
                    arm: Optional[str] = None) -> str:
    """The card to upload: the run's card for ``arm``'s model (default: the shipped one), updating the
    folder's README.md in memory, or a minimal one."""
    from .card import minimal_card, render_card

    readme = model_dir / "README.md"
    existing = readme.read_text() if readme.is_file() else None
    if results is not None:
        return render_card(results, config or {}, repo_id=repo_id, existing=existing, arm=arm)
    model_config = json.loads((model_dir / "config.json").read_text())
    id2label = model_config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    return minimal_card(labels, model_config.get("_name_or_path") or None, repo_id=repo_id, existing=existing)


def _scrub(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token else text


def arm_location(model: str, arm: Optional[str]) -> ModelLocation:
    """Where the model to push is: ``model``'s own (a run's shipped ``model/``), or with ``arm``
    the run's model of that arm (``model/`` when it was shipped, else ``models/<arm>/``; in a
    ``strategy: auto`` run the transfer arm is the best transfer candidate, in ``models/<strategy>/``)."""
    where = resolve_model(model, hub_ids=False)
    if arm is None:
        return where
    if arm not in ARMS:
        raise ConfigError(f"--arm {arm}: choose one of {', '.join(ARMS)}.")
    if where.run_dir is None or where.results is None:
        raise ConfigError(f"--arm {arm} needs a run directory (with results.json); '{model}' is a model folder. "
                          f"Pass the run directory, or push the folder without --arm.")
    results = RunResults.from_dict(where.results)
    if results.arm_stage(arm) is None:
        raise ConfigError(f"--arm {arm}: the run in '{model}' trained no {arm} model (`baseline: false`?); "
                          f"push it without --arm.")
    if results.selected is None and arm != "transfer":
        raise ConfigError(f"--arm {arm}: the run in '{model}' is from before runs kept both arms; it keeps only its "
                          f"transfer model, in model/. Push it without --arm.")
    folder = where.run_dir / results.model_folder(arm)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"--arm {arm}: '{folder}' holds no saved model; push the run without --arm, or "
                          f"run it again to write both arms.")
    return ModelLocation(str(folder), where.run_dir, where.results, where.run_config)


def push_to_hub(model: str, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, token: Optional[str] = None,
                endpoint: Optional[str] = None, arm: Optional[str] = None) -> str:
    """Upload a run's target model, tokenizer and model card to ``repo_id``; return the commit URL.

    Args:
        model (`str`): a run directory (its ``model/`` is pushed with a card from its results) or a
            saved model folder.
        repo_id (`str`): ``user/name`` (or ``org/name``); created if missing, reused if it exists.
        private (`bool`, *optional*): create the repo private (an existing repo keeps its setting).
        revision (`str`, *optional*): branch to commit to; created from ``main`` if missing.
        commit_message (`str`, *optional*): defaults to "Upload <target> classifier (textransfer)".
        token (`str`, *optional*): defaults to ``HF_TOKEN`` / the saved login.
        endpoint (`str`, *optional*): defaults to ``HF_ENDPOINT`` / huggingface.co.
        arm (`str`, *optional*): ``transfer`` or ``baseline``: push that arm of the run in ``model``
            instead of its shipped ``model/``.

    Raises:
        `HubError`: no token, the Hub refused or could not be reached; local files are unchanged.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if not repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"--repo-id '{repo_id}': use the form user/name (or org/name).")
    where = arm_location(model, arm)
    folder, results, config = Path(where.path), where.results, where.run_config
    token = token or get_token()
    if not token:
        raise HubError(f"cannot push to '{repo_id}': no Hugging Face token. Set HF_TOKEN or run `hf auth login` "
                       f"(the token is read from there and never written anywhere).")
    card = model_card_text(folder, results, config, repo_id=repo_id, arm=arm)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(_SKIP_PREFIXES)
                   and f.relative_to(folder).as_posix() != "README.md")
    operations = [CommitOperationAdd(path_in_repo=f.relative_to(folder).as_posix(), path_or_fileobj=str(f))
                  for f in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    if commit_message is None:
        what = f"{results['target']['task']} classifier" if results else "model"
        commit_message = f"Upload {what} (textransfer{f', {arm} arm' if arm else ''})"

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision,
                                 repo_type="model")
    except OfflineModeIsEnabled:
        raise HubError(f"cannot push to '{repo_id}': HF_HUB_OFFLINE is set. Unset it and run the push again; "
                       f"nothing local was changed.") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        # httpx's transport errors are not OSErrors; they are caught by name below.
        cause = _scrub(str(err).splitlines()[0] if str(err) else type(err).__name__, token)
        raise HubError(f"push to '{repo_id}' failed: {type(err).__name__}: {cause}. Nothing local was changed; "
                       f"run the same push again once the cause is fixed.") from None
    except Exception as err:
        import httpx

        if not isinstance(err, httpx.HTTPError):
            raise
        raise HubError(f"push to '{repo_id}' failed: cannot reach {api.endpoint} ({type(err).__name__}: "
                       f"{_scrub(str(err), token)}). Nothing local was changed; run the same push again.") from None
    return info.commit_url


def check_push(repo_id: Optional[str], output_dir) -> None:
    """Raise before a run's training when its ``push_to_hub`` cannot work (no repo, no output, no token)."""
    from huggingface_hub import get_token

    if output_dir is None:
        raise ConfigError("`push_to_hub: true` needs an output directory (--output-dir) to push from.")
    if not repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"`hub_repo_id: {repo_id}`: use the form user/name (or org/name).")
    if not get_token():
        raise HubError(f"`push_to_hub: true` but there is no Hugging Face token to push to '{repo_id}' with; set "
                       f"HF_TOKEN or run `hf auth login` first. Nothing was run.")


def push_run(run_dir, repo_id: str, private: bool = False, revision: Optional[str] = None) -> str:
    """``push_to_hub`` at the end of a run; a failure says the run itself is saved and how to push it."""
    try:
        url = push_to_hub(str(run_dir), repo_id, private=private, revision=revision)
    except HubError as err:
        raise HubError(f"{err} The run finished and is saved in '{run_dir}'; push it with `textransfer push "
                       f"{run_dir} --repo-id {repo_id}`.") from None
    print(f"Pushed to {url}")
    return url


# ---------------------------------------------------------------------------- command line
def command(args) -> int:
    url = push_to_hub(args.run_dir, args.repo_id, private=args.private or None, revision=args.revision,
                      commit_message=args.commit_message, arm=getattr(args, "arm", None))
    print(f"Pushed to {url}")
    return 0
