"""``python -m keyplane``: the same as the ``keyplane`` command."""

import sys

from keyplane.cli import main

sys.exit(main())
