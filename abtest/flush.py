"""Move acknowledged events from the write-ahead store into Parquet files.

File backend: closed segments (and segments of writer processes that died) are compacted into
``<events-dir>/{exposures,outcomes}/part-*.parquet`` and removed. Redis backend (``--redis-url`` or
``REDIS_URL``): both streams are drained through the consumer group ``parquet-flusher``; entries are
acknowledged and deleted only after their Parquet file is durable.

Examples::

    python -m abtest flush --events-dir data/events
    REDIS_URL=redis://localhost:6379/0 python -m abtest flush --events-dir data/events --every 30
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from feedrec_common.config import ConfigError, add_config_arguments, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events-dir", type=Path, default=os.environ.get("FEEDREC_EVENTS_DIR"),
        help="event log directory (default: $FEEDREC_EVENTS_DIR)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"),
        help="drain the Redis streams of this server (default: $REDIS_URL; unset: file backend)",
    )  # fmt: skip
    parser.add_argument(
        "--every", type=float, default=None, metavar="SECONDS",
        help="keep running, flushing every SECONDS (default: flush once and exit)",
    )  # fmt: skip
    parser.add_argument(
        "--min-idle", type=float, default=None, metavar="SECONDS",
        help="Redis: take over entries another flusher left unacknowledged this long (default: 60)",
    )  # fmt: skip
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from abtest.event_store import open_event_log
    from abtest.events import EventLogConfig, EventLogError

    if args.events_dir is None:
        return _fail("--events-dir is required (or set FEEDREC_EVENTS_DIR)")
    if not args.redis_url and not args.events_dir.is_dir():
        return _fail(f"{args.events_dir}: no such event log directory")
    try:
        config = load_config(EventLogConfig, args.config, args.overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.min_idle is not None:
        config = config.model_copy(update={"flusher_min_idle_s": args.min_idle})
    try:
        with open_event_log(args.events_dir, args.redis_url, config) as log:
            while True:
                print(log.flush().summary(), flush=True)
                if args.every is None:
                    return 0
                time.sleep(args.every)
    except EventLogError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 0


def _fail(message: str) -> int:
    print(f"abtest flush: error: {message}", file=sys.stderr)
    return 2
