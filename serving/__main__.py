"""``python -m serving``: run the API with uvicorn.

Examples::

    python -m serving --model gnn=gnn@champion --model mf=bundles/mf-serving --port 8000
    REDIS_URL=redis://localhost:6379/0 python -m serving --workers 2
    FEEDREC_EXPERIMENTS_DIR=configs/experiments FEEDREC_EVENTS_DIR=data/events python -m serving \
        --model gnn=gnn@champion --model mf=mf@champion      # A/B test; GET /experiments/gnn-vs-mf/report

Every other setting comes from the environment (``FEEDREC_*``, ``REDIS_URL``,
``MLFLOW_TRACKING_URI``; see ``serving/settings.py``). ``--model``/``--default-model`` set
``FEEDREC_MODELS``/``FEEDREC_DEFAULT_MODEL`` so every worker reads the same settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description="feedrec recommendation API (uvicorn)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=REF",
                        help="model to serve (repeatable); REF is a bundle path or name@alias")
    parser.add_argument("--default-model", help="model answering users outside experiments")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.model:
        os.environ["FEEDREC_MODELS"] = ",".join(args.model)
    if args.default_model:
        os.environ["FEEDREC_DEFAULT_MODEL"] = args.default_model
    from serving.settings import ServingSettings

    try:
        ServingSettings()  # fail here, with one line per problem, rather than in every worker
    except ValidationError as exc:
        for err in exc.errors():
            print(f"error: setting {'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from serving.http_protocol import JsonErrorHttpProtocol

    # httptools with the API's JSON error shape for requests the HTTP parser refuses (serving/http_protocol.py)
    uvicorn.run("serving.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                loop="uvloop", http=JsonErrorHttpProtocol, access_log=False, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
