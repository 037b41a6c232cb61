"""The two renderings of an :class:`~abtest.report.analysis.ExperimentAnalysis` (plots:
:mod:`abtest.report.plots`).

* :func:`render_markdown` links the plots as files (``<plot_dir>/<name>.png``, written by
  :func:`abtest.report.render.write_report`).
* :func:`render_html` is one self-contained page: inline CSS, plots embedded as base64 PNG ``data:``
  URIs, no script and no external asset, so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, datetime

from abtest.report.analysis import ExperimentAnalysis, arm_label
from abtest.report.plots import plot_caption
from abtest.stats.formatting import format_interval, format_number, format_p, format_pct, format_relative

__all__ = ["render_markdown", "render_html"]

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
            caption = plot_caption(name)
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
            caption = plot_caption(name)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img class="plot" id="plot-{esc(name)}" alt="{esc(caption)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>')  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
