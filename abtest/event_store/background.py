"""A daemon thread that calls ``log.flush()`` every ``interval_s`` seconds (``flush_interval_s``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicFlush:
    """Run ``flush`` periodically until :meth:`stop`; errors are logged and retried next round.

    Args:
        flush (callable): What to call (``EventLog.flush``).
        interval_s (float): Seconds between the end of one call and the start of the next.
    """

    def __init__(self, flush: Callable[[], object], interval_s: float) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-log-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - a failed flush loses nothing; the next round retries
                log.exception("background flush of the event log failed")

    def stop(self) -> None:
        """Stop and wait for a flush in progress to finish."""
        self._stop.set()
        self._thread.join()
