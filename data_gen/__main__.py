"""``python -m data_gen``: see :mod:`data_gen.cli`."""

import sys

from data_gen.cli import main

sys.exit(main())
