"""A/B report: analysis of event rows, decision words, Markdown/HTML output, Prometheus guardrails, CLI."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from abtest.__main__ import main
from abtest.event_store import open_event_log
from abtest.events import Exposure, Outcome
from abtest.report.analysis import analyze_experiment
from abtest.report.prometheus import guardrail_inputs_from_prometheus, histogram_quantile
from abtest.report.render import ReportInputs, render_report, write_report
from tests.abtest.report_fixtures import T0, experiment, make_events, make_interleaved_events

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def config():
    return experiment()


@pytest.fixture(scope="module")
def strong_effect(config):
    return make_events(config, users=3000, lift=0.3, seed=1)


def test_strong_effect_is_shipped_with_plain_words(config, strong_effect):
    exposures, outcomes, pre = strong_effect
    guard = {"latency_p99_ms": {"mf": 20.0, "gnn": 24.0}, "error_rate": {"*": 0.001}}
    report = render_report(ReportInputs(exposures, outcomes, config, guard, pre_period=pre))
    assert report.verdict == "ship"
    assert re.match(r"GNN raises click-through by \d+\.\d% \[\d+\.\d%, \d+\.\d%\], p [<=] ", report.decision)
    assert "no sample-ratio mismatch; guardrails OK" in report.decision
    primary = report.analysis.primary("gnn")
    # the planted lift is +30% of the per-item click probability, so +30% click-through
    assert primary.rel_ci[0] < 0.3 < primary.rel_ci[1]
    assert report.markdown.startswith("# A/B report: gnn-vs-mf")
    assert report.decision in report.markdown and html.escape(report.decision) in report.html


def test_aa_experiment_reports_no_difference(config):
    exposures, outcomes, _ = make_events(config, users=2000, lift=0.0, seed=2)
    report = render_report(ReportInputs(exposures, outcomes, config))
    assert report.verdict == "no_difference"
    assert report.decision.startswith("No significant difference yet: GNN vs MF click-through")
    assert "guardrails not checked" in report.decision
    assert report.analysis.power is not None and report.analysis.power.mde_relative > 0


def test_sample_ratio_mismatch_blocks_the_decision(config):
    exposures, outcomes, _ = make_events(config, users=3000, lift=0.3, seed=3, drop_treatment_share=0.2)
    report = render_report(ReportInputs(exposures, outcomes, config))
    assert report.verdict == "srm"
    assert report.decision.startswith("Do not ship: sample-ratio mismatch (MF ")


def test_guardrail_violation_from_prometheus_blocks_the_decision(config, strong_effect):
    exposures, outcomes, _ = strong_effect
    text = _metrics_text({"mf": [90, 100, 100], "gnn": [0, 10, 100]}, errors=0)  # gnn: 90% of requests > 100 ms
    guard = guardrail_inputs_from_prometheus(text)
    assert guard["latency_p99_ms"]["gnn"] > 200 > guard["latency_p99_ms"]["mf"]
    report = render_report(ReportInputs(exposures, outcomes, config, guard))
    assert report.verdict == "guardrail"
    assert report.decision.startswith("Do not ship: guardrail violated: gnn p99 latency")


def test_per_arm_counts_match_a_hand_count(config):
    # two users, hand-made: mf user 1 sees 2 lists and clicks twice (once repeated), gnn user 2 one list, no click
    arms = dict(zip([1, 2, 3, 4], config.assign_arms([1, 2, 3, 4])[0]))
    mf_user = next(u for u, a in arms.items() if config.arm_names[a] == "mf")
    gnn_user = next(u for u, a in arms.items() if config.arm_names[a] == "gnn")
    exposures = pd.DataFrame([
        {"request_id": "a", "ts": T0, "experiment": config.key, "arm": "mf", "user": mf_user, "items": [1, 2]},
        {"request_id": "b", "ts": T0 + 1, "experiment": config.key, "arm": "mf", "user": mf_user, "items": [3, 4]},
        {"request_id": "c", "ts": T0 + 2, "experiment": config.key, "arm": "gnn", "user": gnn_user, "items": [1, 2]},
        {"request_id": "d", "ts": T0 + 3, "experiment": config.key, "arm": "gnn", "user": "qa-gnn", "items": [1]},
        {"request_id": "e", "ts": T0 + 4, "experiment": "other", "arm": "gnn", "user": gnn_user, "items": [1]},
        {"request_id": "f", "ts": T0 + 5, "experiment": config.key, "arm": "bogus", "user": 99, "items": [1]},
    ])  # fmt: skip
    outcomes = pd.DataFrame([
        {"request_id": "a", "user": mf_user, "item": 1, "kind": "click"},
        {"request_id": "a", "user": mf_user, "item": 1, "kind": "click"},  # a double click counts once
        {"request_id": "b", "user": mf_user, "item": 4, "kind": "click"},
        {"request_id": "b", "user": mf_user, "item": 3, "kind": "like"},  # not a click
        {"request_id": "d", "user": "qa-gnn", "item": 1, "kind": "click"},  # QA user: excluded
        {"request_id": "zzz", "user": gnn_user, "item": 1, "kind": "click"},  # unknown request
    ])  # fmt: skip
    a = analyze_experiment(ReportInputs(exposures, outcomes, config))
    rows = {s.arm: s for s in a.arm_summaries}
    assert (rows["mf"].users, rows["mf"].exposures, rows["mf"].clicks) == (1, 2, 2)
    assert (rows["gnn"].users, rows["gnn"].exposures, rows["gnn"].clicks) == (1, 1, 0)
    assert a.dropped == {"forced (QA) exposures": 1, "exposures with an arm not in the config": 1,
                         "repeated clicks on the same item of a list": 1}  # fmt: skip
    assert a.verdict == "insufficient_data" and a.decision.startswith("Not enough data yet")


def test_cuped_reduces_the_variance_with_a_correlated_covariate(config, strong_effect):
    exposures, outcomes, pre = strong_effect
    a = analyze_experiment(ReportInputs(exposures, outcomes, config, pre_period=pre))
    metrics = {r.metric for r in a.results}
    assert "clicks per user (CUPED)" in metrics
    assert a.cuped_variance_reduction["gnn"] > 0.05
    without = analyze_experiment(ReportInputs(exposures, outcomes, config))
    assert "clicks per user (CUPED)" not in {r.metric for r in without.results}


def test_adjusted_p_values_are_never_below_the_raw_ones(config, strong_effect):
    exposures, outcomes, pre = strong_effect
    a = analyze_experiment(ReportInputs(exposures, outcomes, config, pre_period=pre))
    assert len(a.results) == len(a.holm) == len(a.bh) == 4
    for raw, holm, bh in zip(a.results, a.holm, a.bh):
        assert holm.p_value >= raw.p_value - 1e-12 and bh.p_value >= raw.p_value - 1e-12
        assert holm.p_value >= bh.p_value - 1e-12


def test_looks_are_daily_cumulative_and_end_with_the_overall_result(config, strong_effect):
    exposures, outcomes, _ = strong_effect
    a = analyze_experiment(ReportInputs(exposures, outcomes, config))
    looks = a.looks["gnn"]
    assert a.time_unit == "day" and 9 <= len(looks) <= 11
    users = [sum(lk.users.values()) for lk in looks]
    assert users == sorted(users)
    final = a.primary("gnn")
    assert looks[-1].rel_lift == pytest.approx(final.rel_lift, rel=1e-9)
    # the always-valid interval is wider than the fixed-horizon one at every look
    for lk in looks:
        assert lk.always_valid_rel_ci[0] < lk.rel_ci[0] and lk.rel_ci[1] < lk.always_valid_rel_ci[1]


def test_interleaving_report_prefers_the_arm_whose_items_get_clicked():
    config = experiment(mode="interleave", key="gnn-vs-mf-interleave")
    exposures, outcomes = make_interleaved_events(config, impressions=1500, seed=4)
    report = render_report(ReportInputs(exposures, outcomes, config))
    p = report.analysis.preference
    assert p.arms == ("gnn", "mf") and p.share_a > 0.6 and p.p_value < 1e-6
    assert report.verdict == "ship" and report.decision.startswith("Users prefer GNN: it wins")
    assert "preference" in report.plots
    same = make_interleaved_events(config, impressions=1500, seed=5, treatment_click=0.2, control_click=0.2)
    assert render_report(ReportInputs(*same, config)).analysis.preference.share_ci[0] < 0.5


def test_write_report_files_are_self_contained(tmp_path, config, strong_effect):
    exposures, outcomes, _ = strong_effect
    paths = write_report(ReportInputs(exposures, outcomes, config), out_dir=tmp_path)
    html = paths.html.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    markdown = paths.markdown.read_text()
    for plot in paths.plots:
        assert plot.read_bytes().startswith(PNG_MAGIC)
        assert f"({plot.parent.name}/{plot.name})" in markdown
    summary = json.loads(paths.summary.read_text())
    assert summary["verdict"] == "ship" and summary["metrics"][0]["p_holm"] >= summary["metrics"][0]["p_value"]


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.01: 50.0, 0.02: 90.0, 0.05: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.015)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.02 + 0.03 * 9 / 10)
    assert histogram_quantile(0.99, {0.01: 0.0, float("inf"): 10.0}) == pytest.approx(0.01)  # +Inf bucket
    assert np.isnan(histogram_quantile(0.99, {}))


def test_error_rate_is_per_arm_only_when_the_counter_has_an_arm_label():
    text = _metrics_text({"mf": [50, 100, 100], "gnn": [50, 100, 100]}, errors=4, none_requests=0)
    guard = guardrail_inputs_from_prometheus(text)
    assert guard["error_rate"] == {"*": pytest.approx(4 / 200)}
    assert "service-wide" in guard["source"]
    labelled = text + 'feedrec_request_errors_total{route="/recommend/{user_id}",status="500",arm="gnn"} 10\n'
    guard = guardrail_inputs_from_prometheus(labelled.replace('feedrec_request_errors_total{route="/recommend/{user_id}",status="503"} 4\n', ""))
    assert guard["error_rate"] == {"gnn": pytest.approx(0.1), "mf": pytest.approx(0.0)}


def test_cli_report_reads_the_event_log(tmp_path, config, capsys):
    exposures, outcomes, _ = make_events(config, users=400, lift=0.0, seed=6)
    events_dir = tmp_path / "events"
    # the synthetic events are dated 2025: accept their outcomes whatever today's date
    with open_event_log(events_dir, config={"retention_s": 1e10}) as log:
        for row in exposures.head(600).to_dict("records"):
            log.append_exposure(Exposure(**{k: row[k] for k in ("event_id", "request_id", "ts", "experiment", "arm",
                                                                   "user", "model_version", "items")}))  # fmt: skip
        known = set(exposures.head(600)["request_id"])
        for row in outcomes[outcomes["request_id"].isin(known)].to_dict("records"):
            log.append_outcome(Outcome(**{k: row[k] for k in ("event_id", "request_id", "ts", "user", "item", "kind")}))
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "e.yaml").write_text(json.dumps(config.model_dump(mode="json")))
    out = tmp_path / "reports"
    code = main(["report", "--experiment", config.key, "--experiments-dir", str(experiments), "--events",
                 str(events_dir), "--out", str(out)])  # fmt: skip
    assert code == 0
    assert (out / "gnn-vs-mf.html").is_file() and (out / "gnn-vs-mf.md").is_file()
    summary = json.loads((out / "gnn-vs-mf.json").read_text())
    assert sum(row["exposures"] for row in summary["arms_table"]) == 600
    assert summary["decision"] in capsys.readouterr().out
    code = main(["report", "--experiment", "nope", "--experiments-dir", str(experiments), "--events", str(events_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("abtest report: error: no experiment 'nope'") and "Traceback" not in err


def _metrics_text(latency_counts: dict[str, list[int]], errors: int, none_requests: int = 0) -> str:
    """Prometheus text with a latency histogram per arm (cumulative counts at 10 ms, 100 ms, +Inf)."""
    lines = ["# TYPE feedrec_request_latency_seconds histogram"]
    route = 'route="/recommend/{user_id}"'
    for arm, (c10, c100, total) in latency_counts.items():
        for le, c in (("0.01", c10), ("0.1", c100), ("1.0", total), ("+Inf", total)):
            lines.append(f'feedrec_request_latency_seconds_bucket{{{route},arm="{arm}",le="{le}"}} {c}.0')
        lines.append(f'feedrec_request_latency_seconds_count{{{route},arm="{arm}"}} {total}.0')
    if none_requests:
        lines.append(f'feedrec_request_latency_seconds_count{{{route},arm="none"}} {none_requests}.0')
    lines.append(f'feedrec_request_errors_total{{{route},status="503"}} {errors}')
    lines.append('feedrec_request_latency_seconds_count{route="/feedback",arm="none"} 7.0')
    return "\n".join(lines) + "\n"


def test_arms_table_gives_clicks_per_feed_and_the_per_post_rate(config):
    """Issue 11 item 16: the column "CTR (clicks/exposure)" showed clicks per list of 5 (or 20) posts, which
    a reader takes for a share. It is "clicks per feed (N posts)", beside the click-through rate per post."""
    exposures, outcomes, _ = make_events(config, users=400, seed=4)  # 5 posts per list
    report = render_report(ReportInputs(exposures, outcomes, config))
    assert "CTR (clicks/exposure)" not in report.markdown
    assert "| clicks per feed (5 posts) | click-through rate (clicks / posts shown) |" in report.markdown
    for row in report.summary()["arms_table"]:
        assert row["posts"] == 5 * row["exposures"]
        assert row["clicks_per_feed"] == pytest.approx(row["clicks"] / row["exposures"])
        assert row["clicks_per_post"] == pytest.approx(row["clicks"] / row["posts"])
        low, high = row["clicks_per_post_ci"]
        assert low < row["clicks_per_post"] < high


@pytest.mark.parametrize("drop", ["control", "both"])
def test_zero_control_clicks_are_not_estimable_in_the_report(config, drop):
    """Issue 11 item 14: a control without clicks printed ``inf%`` and ``[nan%, nan%]`` (both arms without
    clicks: ``+nan%``); the report says "not estimable (control is zero)" and gives the absolute difference."""
    exposures, outcomes, _ = make_events(config, users=400, seed=5)
    arms = {"mf"} if drop == "control" else {"mf", "gnn"}
    outcomes = outcomes[~outcomes["request_id"].isin(set(exposures.loc[exposures["arm"].isin(arms), "request_id"]))]
    report = render_report(ReportInputs(exposures, outcomes, config))
    for text in (report.decision, report.markdown, report.html):
        assert re.search(r"(?<![a-z])(inf|nan)(?![a-z])", text.lower()) is None
    assert "not estimable (control is zero); absolute difference +" in report.decision
    assert report.verdict == ("ship" if drop == "control" else "no_difference")


def test_heavy_tailed_users_get_a_warning(config):
    """Issue 11 item 12: when an arm is too small for the normal approximation (Kohavi's 355 s^2 rule on
    the per-user clicks per feed), the report says so; the ordinary fixture gets no warning."""
    exposures, outcomes, _ = make_events(config, users=3000, seed=6)
    plain = render_report(ReportInputs(exposures, outcomes, config))
    assert plain.summary()["warnings"] == [] and "## Warnings" not in plain.markdown
    # One control user with 3,000 feeds and a click on every other one: a heavy tail.
    heavy = pd.DataFrame([{**exposures.iloc[0].to_dict(), "request_id": f"heavy-{j}", "user": 10**6, "arm": "mf"}
                          for j in range(3000)])  # fmt: skip
    clicks = pd.DataFrame([{"event_id": f"h{j}", "request_id": f"heavy-{j}", "ts": T0, "user": 10**6,
                            "item": heavy["items"].iloc[0][0], "kind": "click"} for j in range(0, 3000, 2)])  # fmt: skip
    report = render_report(ReportInputs(pd.concat([exposures, heavy], ignore_index=True), pd.concat([outcomes, clicks]), config))
    (warning,) = report.summary()["warnings"]
    assert warning.startswith("MF: clicks per feed is heavily skewed")
    assert "355 x skewness^2" in warning and "## Warnings" in report.markdown


def test_analysis_is_one_frozen_record(config):
    """Issue 12 item 7: the helpers filled a mutable 28-field object; the analysis is now built once."""
    import dataclasses

    exposures, outcomes, _ = make_events(config, users=400, seed=7)
    analysis = analyze_experiment(ReportInputs(exposures, outcomes, config))
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.verdict = "ship"
    assert isinstance(analysis.results, tuple) and isinstance(analysis.arm_summaries, tuple)
    assert all(isinstance(looks, tuple) for looks in analysis.looks.values())
