"""``python -m monitoring drift|profile``: see :mod:`monitoring.cli`."""

import sys

from monitoring.cli import main

sys.exit(main())
