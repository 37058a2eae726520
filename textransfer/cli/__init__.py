"""Layer 10, the ``textransfer`` command.

```
textransfer run recipes/news_to_sentiment.yaml --output-dir runs/demo target.k_per_class=16
textransfer run --help        # every config option, with its type, default and help
textransfer push runs/demo --repo-id me/news-to-reviews
textransfer predict runs/demo --input reviews.csv --text-column text --output predictions.csv
textransfer evaluate runs/demo --data labelled.csv
```

``recipes/news_to_sentiment.py`` builds on the same ``add_run_arguments`` and ``main`` (trl's
pattern), so the recipe, ``accelerate launch`` and ``textransfer run`` are one code path.

May import: every layer; parsing (``arguments``) imports only ``config`` and ``errors``, and each
command imports its layer when it runs (``commands``), so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import sys
from typing import List, Optional

from ..errors import TextransferError
from .arguments import add_run_arguments, make_parser, split_overrides
from .commands import COMMANDS, resume_hint

# exit codes: 2 as argparse uses for a usage error, 130 as a shell reports a Ctrl-C (128 + SIGINT)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def parse(argv: List[str]):
    """Parsed arguments; ``section.option=value`` overrides may follow any flag."""
    parser = make_parser()
    # parse_known_args: argparse cannot take positionals after options under a subcommand,
    # so overrides that follow --output-dir come back as extras.
    args, extra = parser.parse_known_args(split_overrides(argv))
    unknown = [a for a in extra if "=" not in a or a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (overrides look like section.option=value)")
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
        return COMMANDS[args.command](args)
    except TextransferError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["main", "make_parser", "add_run_arguments", "split_overrides", "resume_hint"]
