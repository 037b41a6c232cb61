"""The report's plots as PNG bytes, drawn with matplotlib's Agg canvas directly.

``Figure`` + ``FigureCanvasAgg``, no ``pyplot``: no display, no global backend state, safe in a web worker.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abtest.report.analysis import ExperimentAnalysis, arm_label

__all__ = ["PLOT_TITLES", "plot_caption", "render_plots"]

#: Plot name -> caption, in display order.
PLOT_TITLES = {
    "cumulative_lift": "Cumulative lift in click-through with its 95% confidence band",
    "sequential": "Always-valid (sequential) interval over time and the mSPRT boundary",
    "arm_ctr": "Click-through per arm over time",
    "preference": "Interleaving: cumulative preference share with its 95% interval",
}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def plot_caption(name: str) -> str:
    """Caption of a plot; ``cumulative_lift_gnn`` (one plot per treatment arm) has its kind's caption."""
    if name in PLOT_TITLES:
        return PLOT_TITLES[name]
    kind, _, arm = name.rpartition("_")
    return f"{PLOT_TITLES[kind]} ({arm_label(arm)})" if kind in PLOT_TITLES else name


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _x_label(a: ExperimentAnalysis) -> str:
    return f"{a.time_unit}s since the first exposure"


def render_plots(a: ExperimentAnalysis) -> dict[str, bytes]:
    """PNG bytes per plot name (see :data:`PLOT_TITLES`); plots without data are left out."""
    plots: dict[str, bytes] = {}
    truth = a.truth or {}
    if a.mode == "interleave":
        looks = next(iter(a.looks.values()), [])
        if looks:
            fig = Figure(figsize=(7, 3.6), layout="constrained")
            ax = fig.add_subplot()
            x = [lk.elapsed for lk in looks]
            ax.fill_between(x, [lk.rel_ci[0] for lk in looks], [lk.rel_ci[1] for lk in looks], alpha=0.3,
                            color=_COLOURS[0], label="95% Wilson interval")  # fmt: skip
            ax.plot(x, [lk.rel_lift for lk in looks], marker="o", color=_COLOURS[0],
                    label=f"share of wins of {arm_label(a.treatments[0])}")  # fmt: skip
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="no preference")
            ax.set_xlabel(_x_label(a))
            ax.set_ylabel("preference share")
            ax.legend(loc="best", fontsize=8)
            plots["preference"] = _png(fig)
        return plots
    for treatment, looks in a.looks.items():
        if not looks:
            continue
        suffix = "" if len(a.looks) == 1 else f"_{treatment}"
        x = np.array([lk.elapsed for lk in looks])
        lift = np.array([lk.rel_lift for lk in looks])
        fixed = np.array([lk.rel_ci for lk in looks])
        always = np.array([lk.always_valid_rel_ci for lk in looks])
        # Early looks have huge intervals; scale the axis to looks with at least 10% of the final users.
        n = np.array([sum(lk.users.values()) for lk in looks])
        settled = n >= 0.1 * n[-1]
        span = np.concatenate([always[settled].ravel(), [0.0, truth.get("rel_lift", 0.0)]])
        span = span[np.isfinite(span)]
        pad = 0.1 * (span.max() - span.min() + 1e-9)
        ylim = (span.min() - pad, span.max() + pad)

        fig = Figure(figsize=(7, 3.6), layout="constrained")
        ax = fig.add_subplot()
        ax.fill_between(x, fixed[:, 0], fixed[:, 1], alpha=0.3, color=_COLOURS[0], label="95% confidence band")
        ax.plot(x, lift, marker="o", color=_COLOURS[0], label=f"{arm_label(treatment)} vs {arm_label(a.control)}")
        ax.axhline(0, color="grey", linewidth=1)
        if "rel_lift" in truth:
            ax.axhline(truth["rel_lift"], color="black", linestyle="--", linewidth=1, label="true effect")
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:+.0f}%")
        ax.set_xlabel(_x_label(a))
        ax.set_ylim(*ylim)
        ax.set_ylabel("relative lift in click-through")
        ax.legend(loc="best", fontsize=8)
        plots[f"cumulative_lift{suffix}"] = _png(fig)

        fig = Figure(figsize=(10, 3.6), layout="constrained")
        left, right = fig.subplots(1, 2)
        left.fill_between(x, always[:, 0], always[:, 1], alpha=0.25, color=_COLOURS[1], label="always-valid interval")
        left.fill_between(x, fixed[:, 0], fixed[:, 1], alpha=0.35, color=_COLOURS[0], label="fixed-horizon 95%")
        left.plot(x, lift, color="black", linewidth=1)
        left.axhline(0, color="grey", linewidth=1)
        left.yaxis.set_major_formatter(lambda v, _: f"{100 * v:+.0f}%")
        left.set_xlabel(_x_label(a))
        left.set_ylim(*ylim)
        left.set_ylabel("relative lift")
        left.legend(loc="best", fontsize=8)
        right.plot(n, np.abs([lk.z for lk in looks]), marker="o", color="black", label="|z| observed")
        right.plot(n, [lk.z_boundary for lk in looks], color=_COLOURS[1], label="mSPRT boundary")
        right.axhline(1.96, color=_COLOURS[0], linestyle="--", linewidth=1, label="fixed-horizon 1.96")
        right.set_xlabel("users in the experiment")
        right.set_ylabel("|z|")
        right.legend(loc="best", fontsize=8)
        plots[f"sequential{suffix}"] = _png(fig)

        fig = Figure(figsize=(7, 3.6), layout="constrained")
        ax = fig.add_subplot()
        for colour, arm in zip(_COLOURS, [a.control, treatment]):
            ax.plot(x, [lk.ctr.get(arm, math.nan) for lk in looks], marker="o", color=colour, label=arm_label(arm))
            if f"ctr_{arm}" in truth:
                ax.axhline(truth[f"ctr_{arm}"], color=colour, linestyle="--", linewidth=1,
                           label=f"{arm_label(arm)} true")  # fmt: skip
        ax.set_xlabel(_x_label(a))
        ax.set_ylabel("clicks per exposure (cumulative)")
        ax.legend(loc="best", fontsize=8)
        plots[f"arm_ctr{suffix}"] = _png(fig)
    return plots
