"""Recipe: transfer a news-topic classifier to sentiment (source -> target, with baseline).

Copy one of these:

```
python recipes/news_to_sentiment.py --config recipes/news_to_sentiment.yaml --output-dir runs/demo
python recipes/news_to_sentiment.py --config recipes/ag_news_to_sst2.yaml --output-dir runs/sst2 target.k_per_class=64
accelerate launch recipes/news_to_sentiment.py --config recipes/news_to_sentiment.yaml --output-dir runs/demo
textransfer run recipes/news_to_sentiment.yaml --output-dir runs/demo
```

Any config field can be overridden as ``section.option=value`` (or ``--section.option value``).
"""

import sys

from textransfer.cli import add_run_arguments, main as cli_main


def make_parser():
    import argparse

    return add_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))


def main(argv=None):
    # 1. Parse the recipe config and overrides, 2. run source, target and baseline,
    # 3. print the results table: all three are the `textransfer run` command's.
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["run", *argv])


if __name__ == "__main__":
    sys.exit(main())
