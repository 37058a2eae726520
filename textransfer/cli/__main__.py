"""``python -m textransfer.cli ...`` is the ``textransfer`` command."""

import sys

from . import main

sys.exit(main())
