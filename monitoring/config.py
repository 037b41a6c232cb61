"""Settings of the drift monitor (``configs/monitoring/drift.yaml``; any key overridable with ``--set``)."""

from __future__ import annotations

from pydantic import Field

from feedrec_common.config import StrictModel

__all__ = ["DriftConfig"]


class DriftConfig(StrictModel):
    """How windows are cut, tested and turned into alarms.

    The defaults were chosen on simulated no-drift runs (``python -m benchmarks.bench_drift``), not
    on one seed: see ``docs/monitoring.md``.

    Args:
        window_hours (float): Length of a window of traffic. (default: 4)
        alpha (float): Family-wise error rate of one window across all inputs (Holm). (default: 0.01)
        persistence (int): An input alarms only when flagged in this many consecutive windows.
            (default: 2)
        min_psi (float): A categorical input is flagged only if its PSI is at least this, too (a
            practical-size floor for very large windows). (default: 0.0)
        min_requests (int): Inputs with fewer requests in a window (or reference) are not tested.
            (default: 30)
        cold_threshold (int): Users with at most this many training engagements are cold. (default: 2)
        max_categories (int): Categories kept per categorical input (the reference's most common);
            the rest are pooled into ``other``. (default: 12)
        min_category_share (float): Categories below this reference share are pooled too. (default: 0.01)
        psi_bins (int): Quantile bins of the reference for the PSI of continuous inputs. (default: 10)
        reference_samples (int): Reference values kept per continuous input (seeded subsample).
            (default: 20000)
        seed (int): Seed of that subsample. (default: 0)
    """

    window_hours: float = Field(4.0, gt=0)
    alpha: float = Field(0.01, gt=0, lt=1)
    persistence: int = Field(2, ge=1)
    min_psi: float = Field(0.0, ge=0)
    min_requests: int = Field(30, ge=2)
    cold_threshold: int = Field(2, ge=0)
    max_categories: int = Field(12, ge=2)
    min_category_share: float = Field(0.01, ge=0, lt=1)
    psi_bins: int = Field(10, ge=2)
    reference_samples: int = Field(20_000, ge=100)
    seed: int = 0

    @property
    def window_seconds(self) -> float:
        return self.window_hours * 3600.0
