"""Drift report: Markdown (plots linked as PNG files) and one self-contained HTML page (plots inline).

Plots (matplotlib's Agg canvas, no ``pyplot`` state):

* ``statistic_over_time``: ``-log10`` of each input's Holm-adjusted p-value per window, the ``alpha``
  line, and the windows in alarm shaded;
* ``psi_over_time``: each input's PSI per window;
* ``input_<name>``: the reference against the latest window (histograms of continuous inputs, shares
  of categorical ones).
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitoring.detectors import categorical_counts
from monitoring.drift import DriftRun
from monitoring.profile import ReferenceProfile

__all__ = ["DriftReport", "render_report", "write_report"]


@dataclass(frozen=True)
class DriftReport:
    """A rendered report: ``markdown`` links ``plots/<name>.png``; ``html`` embeds them."""

    markdown: str
    html: str
    plots: dict[str, bytes] = field(default_factory=dict, repr=False)
    summary: str = ""


def _ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")


def render_plots(
    run: DriftRun, profile: ReferenceProfile, latest: tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]
) -> dict[str, bytes]:
    """PNG bytes per plot name (see the module docstring)."""
    plots: dict[str, bytes] = {}
    if run.windows:
        hours = np.asarray([(w.end_ts - run.origin) / 3600 for w in run.windows])
        for key, value, label in (
            ("statistic_over_time", lambda t: -np.log10(max(t.p_adjusted, 1e-300)), "-log10 adjusted p"),
            ("psi_over_time", lambda t: t.psi, "PSI"),
        ):
            fig = Figure(figsize=(9, 4))
            ax = fig.add_subplot()
            for name in run.inputs:
                ys = [value(t) if (t := w.test(name)) is not None else np.nan for w in run.windows]
                ax.plot(hours, ys, marker=".", label=name)
            if key == "statistic_over_time":
                ax.axhline(-np.log10(run.config.alpha), color="k", linestyle="--", label=f"alpha {run.config.alpha:g}")
            for w in run.windows:
                if w.alarmed:
                    ax.axvspan((w.start_ts - run.origin) / 3600, (w.end_ts - run.origin) / 3600, color="red", alpha=0.12)
            ax.set_xlabel("hours since the first window (end of each window; red: in alarm)")
            ax.set_ylabel(label)
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            plots[key] = _png(fig)
    continuous, categorical = latest
    for name in sorted(set(continuous) & set(profile.continuous)):
        fig = Figure(figsize=(5, 3.2))
        ax = fig.add_subplot()
        ref, cur = profile.continuous[name], continuous[name]
        both = np.concatenate([ref, cur])
        lo, hi = np.quantile(both, [0.005, 0.995]) if len(both) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        ax.hist(np.clip(ref, lo, hi), bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(np.clip(cur, lo, hi), bins=bins, density=True, alpha=0.5, label="latest window")
        ax.set_title(name)
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots[f"input_{_slug(name)}"] = _png(fig)
    for name in sorted(set(categorical) & set(profile.categorical)):
        categories = sorted(profile.categorical[name])
        ref = np.asarray([profile.categorical[name][c] for c in categories])
        cur = categorical_counts(categorical[name], categories)
        fig = Figure(figsize=(5, 3.2))
        ax = fig.add_subplot()
        x = np.arange(len(categories))
        ax.bar(x - 0.2, ref / max(ref.sum(), 1e-12), width=0.4, label="reference")
        ax.bar(x + 0.2, cur / max(cur.sum(), 1e-12), width=0.4, label="latest window")
        ax.set_xticks(x, categories, rotation=45, fontsize=7)
        ax.set_ylabel("share")
        ax.set_title(name)
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots[f"input_{_slug(name)}"] = _png(fig)
    return plots


def _summary(run: DriftRun) -> str:
    if not run.windows:
        return "No traffic in the monitored period."
    if not run.alarms:
        return f"No drift alarm in {len(run.windows)} windows ({_ts(run.windows[0].start_ts)} to {_ts(run.windows[-1].end_ts)} UTC)."
    first = run.alarms[0]
    return (
        f"DRIFT: {len(run.alarms)} alarm(s); the first raised at {_ts(first.raised_at)} UTC on "
        f"{', '.join(first.inputs)}."
    )


def _tables(run: DriftRun, profile: ReferenceProfile) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    latest = run.windows[-1] if run.windows else None
    head = ["input", "test", "statistic", "p (iid)", "design effect", "p (calibrated)", "p (Holm)", "PSI",
            "reference", "latest window", "in alarm"]  # fmt: skip
    rows = []
    for t in latest.tests if latest else ():
        where = f" ({t.detail})" if t.detail else ""
        rows.append([t.input, t.test, f"{t.statistic:.3g}", f"{t.p_raw:.2g}", f"{t.design_effect:.2g}",
                     f"{t.p_value:.2g}", f"{t.p_adjusted:.2g}", f"{t.psi:.3f}", f"{t.reference_value:.3g}{where}",
                     f"{t.window_value:.3g}", "yes" if t.input in latest.alarmed else ""])  # fmt: skip
    alarm_head = ["raised at (UTC)", "window", "until window", "inputs"]
    alarm_rows = [[_ts(a.raised_at), str(a.window), str(a.last_window), ", ".join(a.inputs)] for a in run.alarms]
    return head, rows, alarm_head, alarm_rows


def render_report(
    run: DriftRun, profile: ReferenceProfile, latest: tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]
) -> DriftReport:
    """Render the run (every window's tests and alarms) against ``profile``; ``latest`` are the latest
    window's input values (:func:`monitoring.profile.input_values`) for the histograms."""
    plots = render_plots(run, profile, latest)
    summary = _summary(run)
    head, rows, alarm_head, alarm_rows = _tables(run, profile)
    c = run.config
    rule = (f"windows of {c.window_hours:g} h, one request per user; KS (continuous) and chi-square (categorical) "
            f"with design effects from the reference's own windows; Holm across inputs at alpha {c.alpha:g}; an "
            f"input alarms after {c.persistence} consecutive flagged windows")  # fmt: skip
    ref = f"{profile.source}: {profile.n_requests} requests, {_ts(profile.start_ts)} to {_ts(profile.end_ts)} UTC"

    md = ["# Drift report\n", f"**{summary}**\n", f"- Reference: {ref}", f"- Rule: {rule}",
          f"- Windows: {len(run.windows)}\n", "## Alarms\n"]  # fmt: skip
    md += _md_table(alarm_head, alarm_rows) if alarm_rows else ["None.\n"]
    md += ["## Latest window\n", *(_md_table(head, rows) if rows else ["No tested input.\n"]), "## Plots\n"]
    md += [f"![{name}](plots/{name}.png)\n" for name in plots]

    def table(h, r):
        return ("<table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in h) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in r)
                + "</table>")  # fmt: skip

    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in plots.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}figure{display:inline-block;margin:6px}img{max-width:100%}"
        f"</style></head><body><h1>Drift report</h1><p><b>{html.escape(summary)}</b></p>"
        f"<ul><li>Reference: {html.escape(ref)}</li><li>Rule: {html.escape(rule)}</li>"
        f"<li>Windows: {len(run.windows)}</li></ul><h2>Alarms</h2>"
        + (table(alarm_head, alarm_rows) if alarm_rows else "<p>None.</p>")
        + "<h2>Latest window</h2>" + (table(head, rows) if rows else "<p>No tested input.</p>")
        + f"<h2>Plots</h2>{images}</body></html>"
    )
    return DriftReport("\n".join(md), page, plots, summary)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def write_report(report: DriftReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``drift.md``, ``drift.html`` and ``plots/*.png`` under ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    for name, png in report.plots.items():
        (out_dir / "plots" / f"{name}.png").write_bytes(png)
    paths = {"markdown": out_dir / "drift.md", "html": out_dir / "drift.html"}
    paths["markdown"].write_text(report.markdown)
    paths["html"].write_text(report.html)
    return paths
