"""Write an experiment's A/B report (Markdown + a self-contained HTML page) from the event log.

Examples::

    python -m abtest report --experiment gnn-vs-mf --events data/events --out reports/
    python -m abtest report --experiment gnn-vs-mf --events data/events --metrics-url http://127.0.0.1:8000/metrics \\
        --pre-period-data data/small

Library use (the service's ``GET /experiments/{key}/report`` calls this)::

    from abtest.report.render import ReportInputs, render_report, write_report
    inputs = ReportInputs(log.read_exposures(), log.read_outcomes(), config, guardrail_inputs)
    report = render_report(inputs)
    report.decision   # "GNN raises click-through by 4.1% [2.0%, 6.2%], p = 0.0003; no sample-ratio mismatch; guardrails OK"
    report.html       # one page, plots embedded as base64 PNG
    paths = write_report(inputs, out_dir="reports/")

What the report holds and how each figure is computed: :mod:`abtest.report.analysis` (which also
defines :class:`ReportInputs`, the one typed argument) and ``docs/abtest_reports.md``. Guardrail inputs
from the service's ``/metrics``: :func:`abtest.report.prometheus.guardrail_inputs_from_prometheus`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from abtest.assignment import ExperimentConfig
from abtest.report.analysis import ExperimentAnalysis, ReportInputs, analyze_experiment
from abtest.report.pages import render_html, render_markdown
from abtest.report.plots import render_plots
from abtest.report.prometheus import guardrail_inputs_from_prometheus
from abtest.stats.sequential import SequentialConfig

__all__ = [
    "ReportInputs",
    "Report",
    "ReportPaths",
    "render_report",
    "write_report",
    "add_arguments",
    "run",
]


@dataclass(frozen=True)
class Report:
    """A rendered report.

    Attributes:
        decision: The plain-words verdict shown at the top.
        markdown: Markdown text; plots are linked as ``<plot_dir>/<name>.png``.
        html: One self-contained HTML page.
        verdict: ``ship``, ``do_not_ship``, ``no_difference``, ``srm``, ``guardrail`` or ``insufficient_data``.
        plots: PNG bytes per plot name.
        analysis: Every number behind the report.
        plot_dir: The directory the Markdown links plots from (relative to the Markdown file).
    """

    decision: str
    markdown: str
    html: str
    verdict: str = ""
    plots: dict[str, bytes] = field(default_factory=dict, repr=False)
    analysis: ExperimentAnalysis | None = field(default=None, repr=False)
    plot_dir: str = "plots"

    def summary(self) -> dict[str, Any]:
        """Machine-readable digest of the analysis (what ``write_report`` stores as JSON)."""
        return self.analysis.summary_dict() if self.analysis is not None else {"decision": self.decision}


@dataclass(frozen=True)
class ReportPaths:
    """Files written by :func:`write_report`."""

    markdown: Path
    html: Path
    summary: Path
    plots: tuple[Path, ...]


def render_report(inputs: ReportInputs, *, plot_dir: str | None = None) -> Report:
    """Analyse one experiment (:func:`abtest.report.analysis.analyze_experiment`) and render the report.

    Args:
        inputs (ReportInputs): Events, the experiment's config and the analysis options.
        plot_dir (str, optional): Where the Markdown links its plots. (default: ``<key>_plots``)
    """
    analysis = analyze_experiment(inputs)
    plots = render_plots(analysis)
    plot_dir = plot_dir or f"{inputs.config.key}_plots"
    return Report(
        decision=analysis.decision,
        markdown=render_markdown(analysis, list(plots), plot_dir),
        html=render_html(analysis, plots),
        verdict=analysis.verdict,
        plots=plots,
        analysis=analysis,
        plot_dir=plot_dir,
    )


def write_report(inputs: ReportInputs, *, out_dir: str | Path, plot_dir: str | None = None) -> ReportPaths:
    """:func:`render_report` and write ``<out_dir>/<key>.md``, ``<key>.html``, ``<key>.json`` (the digest)
    and ``<key>_plots/*.png``. Files are written to a temporary name and renamed, so a reader never sees
    half a report."""
    out = Path(out_dir)
    report = render_report(inputs, plot_dir=plot_dir)
    key = inputs.config.key
    plot_path = out / report.plot_dir
    plot_path.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, png in report.plots.items():
        plots.append(_write_atomic(plot_path / f"{name}.png", png))
    summary = json.dumps(report.summary(), indent=2, default=_json_default, allow_nan=True) + "\n"
    return ReportPaths(
        markdown=_write_atomic(out / f"{key}.md", report.markdown.encode()),
        html=_write_atomic(out / f"{key}.html", report.html.encode()),
        summary=_write_atomic(out / f"{key}.json", summary.encode()),
        plots=tuple(plots),
    )


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="experiment key, e.g. gnn-vs-mf")
    parser.add_argument("--experiments-dir", type=Path, default=Path("configs/experiments"),
                        help="directory of experiment YAML files (default: configs/experiments)")
    parser.add_argument("--events", type=Path, default=os.environ.get("FEEDREC_EVENTS_DIR"),
                        help="event log directory (default: $FEEDREC_EVENTS_DIR)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="read events of the Redis backend too (default: $REDIS_URL)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output directory (default: reports/)")
    parser.add_argument("--metrics-file", type=Path, help="Prometheus text (saved GET /metrics) for the guardrails")
    parser.add_argument("--metrics-url", help="fetch GET /metrics from this URL for the guardrails (loopback)")
    parser.add_argument("--pre-period-data", type=Path,
                        help="data_gen dataset whose last 14 days of clicks per user are the CUPED covariate")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument("--tuning-users", type=int, default=SequentialConfig().tuning_sample_size,
                        help="users (both arms) where the sequential boundary is tightest (default: 5000)")  # fmt: skip


def load_experiment_config(experiments_dir: Path, key: str) -> ExperimentConfig:
    """The experiment ``key`` from ``experiments_dir`` (``ConfigError`` / ``KeyError`` with a clear message)."""
    from abtest.assignment import Router

    return Router.from_dir(experiments_dir).get(key)


def run(args: argparse.Namespace) -> int:
    from abtest.event_store import open_event_log
    from abtest.events import EventLogError
    from abtest.report.analysis import pre_period_clicks_from_dataset
    from feedrec_common.config import ConfigError

    if not 0 < args.alpha < 1:
        return _fail(f"--alpha must be in (0, 1), got {args.alpha}")
    try:
        config = load_experiment_config(args.experiments_dir, args.experiment)
    except (ConfigError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    if args.events is None:
        return _fail("--events is required (or set FEEDREC_EVENTS_DIR)")
    if not args.redis_url and not args.events.is_dir():
        return _fail(f"{args.events}: no such event log directory")
    guardrails = None
    try:
        if args.metrics_file is not None:
            guardrails = guardrail_inputs_from_prometheus(args.metrics_file.read_text())
        elif args.metrics_url:
            import httpx

            guardrails = guardrail_inputs_from_prometheus(httpx.get(args.metrics_url, timeout=10).text)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read the metrics: {exc}")
    except Exception as exc:  # httpx errors: the report is still useful without guardrails
        print(f"abtest report: warning: guardrails skipped, {args.metrics_url}: {exc}", file=sys.stderr)
    try:
        with open_event_log(args.events, args.redis_url) as log:
            exposures, outcomes = log.read_exposures(), log.read_outcomes()
    except EventLogError as exc:
        return _fail(str(exc))
    pre = None
    if args.pre_period_data is not None:
        try:
            pre = pre_period_clicks_from_dataset(args.pre_period_data)
        except (OSError, ValueError) as exc:
            return _fail(f"{args.pre_period_data}: {exc}")
    inputs = ReportInputs(
        exposures, outcomes, config, guardrails, pre_period=pre, alpha=args.alpha,
        sequential=SequentialConfig(alpha=args.alpha, tuning_sample_size=args.tuning_users),
    )  # fmt: skip
    paths = write_report(inputs, out_dir=args.out)
    print(json.loads(paths.summary.read_text())["decision"])
    print(f"wrote {paths.markdown}, {paths.html} and {len(paths.plots)} plot(s)")
    return 0


def _fail(message: str) -> int:
    print(f"abtest report: error: {message}", file=sys.stderr)
    return 2
