"""One process of the multi-process test (``test_distributed.py``), launched by ``torchrun``.

It runs ``textransfer run`` unchanged, with two spies: which training rows this process's
batches hold in each stage and epoch (from the collator, which sees the ``row`` column), and
which files it writes under the output folder. Both go to ``RECORD.rank<N>.json``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py RECORD -- run CONFIG ...
"""

import builtins
import json
import os
import sys
from pathlib import Path


def main():
    record, argv = sys.argv[1], sys.argv[3:]  # argv[2] is "--"
    out = Path(argv[argv.index("--output-dir") + 1]).resolve()
    stages, writes = [], []

    import textransfer.training.loaders as trainer

    real_loader = trainer.train_dataloader

    def spy_loader(*args, **kwargs):
        loader = real_loader(*args, **kwargs)
        stage = {"epochs": {}}
        stages.append(stage)
        epoch = [0]
        sampler, collate = loader.batch_sampler, loader.collate_fn
        real_set_epoch = sampler.set_epoch

        def set_epoch(e):
            epoch[0] = e
            real_set_epoch(e)

        def collate_fn(features):
            stage["epochs"].setdefault(str(epoch[0]), []).append([f["row"] for f in features])
            return collate(features)

        sampler.set_epoch = set_epoch
        loader.collate_fn = collate_fn
        return loader

    trainer.train_dataloader = spy_loader

    def under_out(path) -> bool:
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(out)
        except (TypeError, ValueError):
            return False

    real_open, real_replace, real_rename, real_mkdir = builtins.open, os.replace, os.rename, os.mkdir

    def spy_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and under_out(file):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def spy(real):
        def wrapped(src, *args, **kwargs):
            if under_out(src):
                writes.append(str(src))
            return real(src, *args, **kwargs)
        return wrapped

    builtins.open, os.replace, os.rename, os.mkdir = spy_open, spy(real_replace), spy(real_rename), spy(real_mkdir)

    from textransfer.cli import main as cli_main

    code = cli_main(argv)
    builtins.open, os.replace, os.rename, os.mkdir = real_open, real_replace, real_rename, real_mkdir
    from accelerate import PartialState

    state = PartialState()
    Path(f"{record}.rank{state.process_index}.json").write_text(json.dumps(
        {"world_size": state.num_processes, "rank": state.process_index, "stages": stages, "writes": writes}))
    return code


if __name__ == "__main__":
    sys.exit(main())
