"""``python -m recsys.topk build`` (``make install`` runs it) and ``python -m recsys.topk info``."""

from recsys.topk.cli import main

raise SystemExit(main())
