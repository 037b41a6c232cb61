"""Drift gauges on ``/metrics``: a background task re-runs the drift monitor over recent traffic.

Off unless ``FEEDREC_DRIFT_REFERENCE`` names the served model's reference: a profile JSON
(``python -m monitoring profile``) or its training dataset directory (the profile of its last days,
:func:`monitoring.profile.profile_from_dataset`). Every ``FEEDREC_DRIFT_INTERVAL_S`` seconds, in a worker
thread (never in a request), the watch reads the event sink's exposures and outcomes of the last
``FEEDREC_DRIFT_LOOKBACK_HOURS``, runs :func:`monitoring.drift.monitor` (the defaults of
:class:`monitoring.config.DriftConfig`) and sets :class:`monitoring.prometheus.DriftGauges` on the
service's registry. A failed update is logged and counted (``feedrec_drift_watch_errors_total``) and the
gauges keep their last values; ``feedrec_drift_watch_last_update_timestamp_seconds`` says when they were
set, so the stale-monitor alert (``configs/monitoring/alerts.yml``) fires when updates stop.

With ``FEEDREC_ALLOW_SIM_TIME`` the events carry simulated times, so the lookback counts back from the
newest exposure instead of the wall clock. Lookups (user history, post age, topic) come from the
reference's dataset (``FEEDREC_DATA_DIR`` when the reference is a profile that names none).
Several uvicorn workers (``PROMETHEUS_MULTIPROC_DIR``) do not export these gauges: run one watch
process, or scrape ``python -m monitoring drift`` reports instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("serving.drift")

__all__ = ["DriftWatch", "start_drift_watch"]


class DriftWatch:
    """Loads the reference once, then :meth:`update` recomputes the gauges from the sink's recent events.

    Args:
        reference (Path): Profile JSON or dataset directory.
        data_dir (Path, optional): Dataset for the lookups when the profile names none.
        sink: The service's event sink (needs ``read_exposures`` / ``read_outcomes``).
        registry (CollectorRegistry): The service's metrics registry.
        lookback_s (float): Traffic window read at each update.
        sim_time (bool): Count the lookback back from the newest exposure, not the wall clock.
    """

    def __init__(self, reference: Path, data_dir: Path | None, sink, registry: CollectorRegistry,
                 lookback_s: float, sim_time: bool = False, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        from monitoring.config import DriftConfig
        from monitoring.features import load_catalog
        from monitoring.profile import ReferenceProfile, profile_from_dataset
        from monitoring.prometheus import DriftGauges

        self.config = DriftConfig()
        reference = Path(reference)
        if reference.is_dir():
            self.catalog = load_catalog(reference, self.config.cold_threshold)
            self.profile = profile_from_dataset(self.catalog, self.config)
        elif reference.is_file():
            self.profile = ReferenceProfile.load(reference)
            data = Path(self.profile.dataset) if self.profile.dataset else data_dir
            if data is None:
                raise ValueError(f"{reference}: the profile names no dataset; set FEEDREC_DATA_DIR")
            self.catalog = load_catalog(data, self.config.cold_threshold)
        else:
            raise FileNotFoundError(f"FEEDREC_DRIFT_REFERENCE={reference}: no such profile file or dataset directory")
        self.sink, self.lookback_s, self.sim_time, self.clock = sink, lookback_s, sim_time, clock
        self.gauges = DriftGauges(registry)
        self.errors = Counter("feedrec_drift_watch_errors_total", "Drift gauge updates that failed", registry=registry)
        self.last_update = Gauge("feedrec_drift_watch_last_update_timestamp_seconds",
                                 "Wall time of the last drift gauge update", registry=registry)  # fmt: skip
        self.requests = Gauge("feedrec_drift_watch_requests", "Requests in the last drift update's lookback",
                              registry=registry)  # fmt: skip

    def update(self):
        """One update (blocking: call it in a thread); returns the :class:`~monitoring.drift.DriftRun`."""
        from monitoring.drift import monitor
        from monitoring.features import traffic_tables

        since = None if self.sim_time else self.clock() - self.lookback_s
        exposures = self.sink.read_exposures(since=since)
        if self.sim_time and len(exposures):
            exposures = exposures[exposures["ts"] >= exposures["ts"].max() - self.lookback_s]
        since_ts = float(exposures["ts"].min()) if len(exposures) else since
        outcomes = self.sink.read_outcomes(since=since_ts)
        traffic = traffic_tables(exposures, outcomes, self.catalog)
        run = monitor(self.profile, traffic, self.config)
        self.gauges.update(run)
        self.requests.set(len(traffic.requests))
        self.last_update.set(self.clock())
        return run

    async def run_forever(self, interval_s: float) -> None:
        """Update every ``interval_s`` seconds until cancelled; failures are logged, counted, survived."""
        while True:
            try:
                await asyncio.to_thread(self.update)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a monitor failure must never take the service down
                self.errors.inc()
                log.exception("drift gauge update failed")
            await asyncio.sleep(interval_s)


def start_drift_watch(settings, sink, registry: CollectorRegistry) -> asyncio.Task | None:
    """The watch's task when ``settings.drift_reference`` is set and the sink can be read, else ``None``."""
    if settings.drift_reference is None:
        return None
    if not (hasattr(sink, "read_exposures") and hasattr(sink, "read_outcomes")):
        log.warning("drift gauges off: the event sink %s cannot be read back", type(sink).__name__)
        return None
    watch = DriftWatch(settings.drift_reference, settings.data_dir, sink, registry,
                       lookback_s=settings.drift_lookback_hours * 3600, sim_time=settings.allow_sim_time)  # fmt: skip
    log.info("drift gauges: reference %s, every %.0f s over %.0f h", settings.drift_reference,
             settings.drift_interval_s, settings.drift_lookback_hours)  # fmt: skip
    return asyncio.get_running_loop().create_task(watch.run_forever(settings.drift_interval_s))
