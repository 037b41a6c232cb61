"""Read the event log's flushed Parquet (``python -m abtest flush`` writes it) for the monitor.

The event log's own readers (:mod:`abtest.event_store.tables`) give the standard columns with duplicates
dropped; optional per-slot columns the monitor understands (``scores``, ``item_ages``) are carried over
from the files by ``event_id`` when present.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from abtest.event_store.tables import concat, read_parquet_files, to_frame

__all__ = ["EXTRA_EXPOSURE_COLUMNS", "read_events"]

#: Optional per-slot exposure columns (see :mod:`monitoring.features`).
EXTRA_EXPOSURE_COLUMNS = ("scores", "item_ages")


def read_events(
    events_dir: str | Path, since: float | None = None, until: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exposures and outcomes of ``events_dir`` with ``since <= ts < until``.

    Raises:
        FileNotFoundError: no ``exposures/*.parquet`` under ``events_dir`` (the message says to flush).
    """
    events_dir = Path(events_dir)
    parts = read_parquet_files("exposures", events_dir / "exposures")
    if not parts:
        raise FileNotFoundError(
            f"{events_dir}: no exposures/*.parquet (run `python -m abtest flush --events-dir {events_dir}` first)"
        )
    exposures, _ = to_frame("exposures", concat("exposures", parts), since, until)
    extras = [p.select(["event_id", *(c for c in EXTRA_EXPOSURE_COLUMNS if c in p.column_names)]).to_pandas()
              for p in parts if any(c in p.column_names for c in EXTRA_EXPOSURE_COLUMNS)]  # fmt: skip
    if extras:
        extra = pd.concat(extras, ignore_index=True).drop_duplicates("event_id", keep="first")
        exposures = exposures.merge(extra, on="event_id", how="left")
    outcome_parts = read_parquet_files("outcomes", events_dir / "outcomes")
    outcomes, _ = to_frame("outcomes", concat("outcomes", outcome_parts), since, None)
    return exposures, outcomes
