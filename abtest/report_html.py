"""Plots (PNG bytes) and the two renderings of an :class:`~abtest.report_analysis.ExperimentAnalysis`.

* :func:`render_plots` draws with matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``, no
  ``pyplot``): no display, no global backend state, safe in a web worker.
* :func:`render_markdown` links the plots as files (``<plot_dir>/<name>.png``, written by
  :func:`abtest.report.write_report`).
* :func:`render_html` is one self-contained page: inline CSS, plots embedded as base64 PNG ``data:``
  URIs, no script and no external asset, so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abtest.report_analysis import ExperimentAnalysis, arm_label
from abtest.stats.formatting import format_interval, format_number, format_p, format_pct, format_relative

__all__ = ["PLOT_TITLES", "render_plots", "render_markdown", "render_html"]

#: Plot name -> caption, in display order.
PLOT_TITLES = {
    "cumulative_lift": "Cumulative lift in click-through with its 95% confidence band",
    "sequential": "Always-valid (sequential) interval over time and the mSPRT boundary",
    "arm_ctr": "Click-through per arm over time",
    "preference": "Interleaving: cumulative preference share with its 95% interval",
}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _caption(name: str) -> str:
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


# --------------------------------------------------------------------------- shared table content


def _ci(lo: float, hi: float, pct: bool = False) -> str:
    text = format_interval(lo, hi, pct=pct)
    return "" if text == "n/a" else text


def _feed_column(a: ExperimentAnalysis) -> str:
    """``clicks per feed (20 posts)``: the list length as served (a range when lists differ)."""
    if a.feed_length is None:
        return "clicks per feed"
    low, high = a.feed_length
    return f"clicks per feed ({low} posts)" if low == high else f"clicks per feed ({low}-{high} posts)"


def _arm_rows(a: ExperimentAnalysis) -> tuple[list[str], list[list[str]]]:
    if a.mode == "interleave":
        head = ["arm", "items contributed", "credited clicks", "clicks per contributed item"]
        rows = [[arm_label(s.arm), f"{s.posts:,}", f"{s.clicks:,}", f"{s.clicks_per_post:.4f}"] for s in a.arm_summaries]
        return head, rows
    head = ["arm", "users", "feeds served", "clicks", _feed_column(a), "click-through rate (clicks / posts shown)",
            "clicks/user", "engaged share"]  # fmt: skip
    rows = [
        [arm_label(s.arm) + (" (control)" if s.arm == a.control else ""), f"{s.users:,}", f"{s.exposures:,}",
         f"{s.clicks:,}", f"{s.clicks_per_feed:.4f} {_ci(*s.clicks_per_feed_ci)}",
         f"{format_pct(s.clicks_per_post)} {_ci(*s.clicks_per_post_ci, pct=True)}".strip(),
         f"{s.clicks_per_user:.4f} {_ci(*s.clicks_per_user_ci)}",
         f"{format_pct(s.engaged_share)} {_ci(*s.engaged_share_ci, pct=True)}"]
        for s in a.arm_summaries
    ]  # fmt: skip
    return head, rows


def _metric_rows(a: ExperimentAnalysis) -> tuple[list[str], list[list[str]]]:
    head = ["metric", "arm", "control", "treatment", "relative lift [95% CI]", "absolute lift [95% CI]",
            "p", "p (Holm)", "p (BH)", "chance to win"]  # fmt: skip
    rows = []
    for r, h, b in zip(a.results, a.holm, a.bh):
        rows.append([
            r.metric, arm_label(r.treatment_name), format_number(r.control_mean), format_number(r.treatment_mean),
            format_relative(r.rel_lift, r.rel_ci),
            f"{format_number(r.abs_lift, '+')} {format_interval(*r.abs_ci, pct=False, sign='+')}",
            format_p(r.p_value, label=False), format_p(h.p_value, label=False), format_p(b.p_value, label=False),
            format_pct(r.chance_to_win),
        ])  # fmt: skip
    return head, rows


def _sections(a: ExperimentAnalysis) -> list[tuple[str, list[str]]]:
    """Text sections shared by both renderings: ``(title, paragraphs)``."""
    out: list[tuple[str, list[str]]] = []
    if a.mode == "ab":
        srm = [a.srm.summary()] if a.srm is not None else ["not computed (no exposures)"]
        out.append(("Sample ratio", srm))
        seq = [s.summary() for s in a.sequential.values()] or ["not computed (too few users)"]
        seq.append("The always-valid interval (mSPRT, normal mixture) may be read every day without inflating the "
                   "false-positive rate; it is wider than the fixed-horizon interval, which is valid only at the "
                   "planned end.")  # fmt: skip
        out.append(("Sequential test", seq))
        if a.has_cuped:
            cuped = ["CUPED adjusts clicks per user with each user's pre-experiment clicks."]
            for t, reduction in a.cuped_variance_reduction.items():
                cuped.append(f"{arm_label(t)}: variance reduced by {format_pct(reduction)} (interval width x "
                             f"{math.sqrt(max(1 - reduction, 0)):.2f}).")  # fmt: skip
            out.append(("CUPED", cuped))
        out.append(("Power", [a.power.summary()] if a.power is not None else ["not computed (too few users)"]))
    if a.preference is not None:
        out.append(("Interleaving preference", [a.preference.summary(),
                    "Impressions of one user are treated as independent; the share is the treatment's share of "
                    "impressions with a preference."]))  # fmt: skip
    if a.guardrails is not None:
        guard = [f"{a.guardrails.status}: {a.guardrails.explanation}"]
        if a.guardrail_source:
            guard.append(f"Source: {a.guardrail_source}.")
    else:
        guard = ["Not checked: no latency / error-rate figures were given."]
    out.append(("Guardrails", guard))
    if a.truth:
        parts = [f"{k} = {format_pct(v, '+') if k == 'rel_lift' else f'{v:.4f}'}" for k, v in a.truth.items()]
        out.append(("Ground truth (simulation)", ["; ".join(parts)]))
    if a.warnings:
        out.insert(0, ("Warnings", list(a.warnings)))
    data = []
    if a.first_ts is not None:
        data.append(f"Exposures from {_when(a.first_ts)} to {_when(a.last_ts)}; looks per {a.time_unit}.")
    for what, n in a.dropped.items():
        data.append(f"Left out: {n:,} {what}.")
    data.extend(a.notes)
    if data:
        out.append(("Data", data))
    return out


def _when(ts: float | None) -> str:
    return "?" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- Markdown


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(a: ExperimentAnalysis, plot_names: list[str], plot_dir: str) -> str:
    """The report in Markdown; plots are linked as ``{plot_dir}/{name}.png``."""
    lines = [f"# A/B report: {a.key}", "", f"**{a.decision}**", "",
             f"Mode: {a.mode}; control: {arm_label(a.control)}; arms: {', '.join(map(arm_label, a.arms))}; "
             f"alpha = {a.alpha:g}; generated {a.generated_at.strftime('%Y-%m-%d %H:%M UTC')}.", ""]  # fmt: skip
    head, rows = _arm_rows(a)
    lines += ["## Arms", "", _md_table(head, rows), ""]
    if a.results:
        head, rows = _metric_rows(a)
        lines += ["## Metrics", "", "p: unadjusted; Holm controls the family-wise error, BH the false discovery "
                  "rate, over all metrics and arms.", "", _md_table(head, rows), ""]  # fmt: skip
    for title, paragraphs in _sections(a):
        lines += [f"## {title}", ""] + [p + "\n" for p in paragraphs]
    if plot_names:
        lines += ["## Plots", ""]
        for name in plot_names:
            caption = _caption(name)
            lines += [f"![{caption}]({plot_dir}/{name}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.decision{font-size:1.15em;padding:.8em 1em;border-radius:6px;border-left:6px solid}
.ship{background:#e8f5e9;border-color:#2e7d32}.do_not_ship,.srm,.guardrail{background:#ffebee;border-color:#c62828}
.no_difference,.insufficient_data{background:#fff8e1;border-color:#f9a825}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.meta{color:#555;font-size:.9em}
"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out += ["<tr>", *(f"<td>{esc(c)}</td>" for c in row), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def render_html(a: ExperimentAnalysis, plots: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page (plots as base64 PNG ``data:`` URIs)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>A/B report: {esc(a.key)}</title><style>{_CSS}</style></head><body>",
        f"<h1>A/B report: {esc(a.key)}</h1>",
        f'<p id="decision" class="decision {esc(a.verdict)}" data-verdict="{esc(a.verdict)}">{esc(a.decision)}</p>',
        f'<p class="meta">Mode: {esc(a.mode)}; control: {esc(arm_label(a.control))}; arms: '
        f"{esc(', '.join(map(arm_label, a.arms)))}; alpha = {a.alpha:g}; generated "
        f"{esc(a.generated_at.strftime('%Y-%m-%d %H:%M UTC'))}.</p>",
    ]  # fmt: skip
    head, rows = _arm_rows(a)
    parts += ["<h2>Arms</h2>", _html_table(head, rows)]
    if a.results:
        head, rows = _metric_rows(a)
        parts += ["<h2>Metrics</h2>", "<p>p: unadjusted; Holm controls the family-wise error, BH the false "
                  "discovery rate, over all metrics and arms.</p>", _html_table(head, rows)]  # fmt: skip
    for title, paragraphs in _sections(a):
        parts.append(f"<h2>{esc(title)}</h2>")
        parts += [f"<p>{esc(p)}</p>" for p in paragraphs]
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, png in plots.items():
            caption = _caption(name)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img class="plot" id="plot-{esc(name)}" alt="{esc(caption)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>')  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
