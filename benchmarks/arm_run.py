"""One benchmark arm as a textransfer run: trained into a temporary folder, read back as the test
accuracy and the predicted and gold label of every test row (by row number), which the paired
bootstrap of ``low_resource.compare`` pairs across arms."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def run_arm_predictions(cfg, prefix: str, shipped: bool = False) -> dict:
    """Run ``cfg`` (a `RunConfig`) and return ``accuracy`` (the transfer arm's test accuracy) and,
    in test-row order, ``predictions``, ``references`` (label ids) and ``rows``. ``shipped``: those
    of the arm the run ships (``results.json``'s ``selected``: transfer or baseline, chosen on
    validation; ``cfg`` must train the baseline), with ``selected`` (that arm) added."""
    from textransfer import run_transfer

    with tempfile.TemporaryDirectory(prefix=prefix) as out:
        results = run_transfer(cfg, output_dir=out, overwrite=True)
        rows = [json.loads(line) for line in (Path(out) / "test_predictions.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: r["row"])
    names = cfg.target.label_names
    arm = results["selected"]["arm"] if shipped else "transfer"
    return {"accuracy": results["target"][arm]["metrics"]["accuracy"],
            "predictions": [names.index(r[arm]["label"]) for r in rows],
            "references": [names.index(r["label"]) for r in rows], "rows": [r["row"] for r in rows],
            **({"selected": arm} if shipped else {})}
