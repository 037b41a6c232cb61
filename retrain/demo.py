"""``python -m retrain demo``: the loop closing on simulated traffic with a shift injected.

1. A champion GNN is trained on the base dataset (``gnn@champion`` in the demo's own MLflow store).
2. :mod:`monitoring.scenarios` simulates ``reference_days`` of drift-free traffic, then ``days`` more
   with a shift (default ``cold_surge``) starting ``shift_day`` days in: the service's logs, with a known
   shift time.
3. The drift monitor (:mod:`monitoring.drift`, default settings) compares the monitored windows with the
   profile of the reference days and raises an alarm.
4. At the alarm, the logs up to that time are the loop's events: ``python -m retrain run`` (dataset,
   validate, train the challenger, A/B against the champion in the simulator, promote on ship).
5. Clicks per list (the policy benchmark's figure: the true expected clicks of each user's list, over
   the simulated request mix) before the shift, after it with the old champion, and after it with the
   promoted model, per 4-hour window and in total; the plot goes to ``--plot``.

The traffic is drawn from the scenario's logging policy (two noisy oracles), not from the champion:
the demo shows the loop's plumbing and decision on the service's kind of logs, and what retraining on
them buys the served model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from monitoring.scenarios import SHIFT_KINDS

DAY = 86_400
#: configs/train/gnn_small.yaml's validation recall peaks after 2 epochs; without the refit phase one
#: training takes ~3 minutes on 2 shared cores instead of ~9, which keeps the demo inside 15 minutes.
DEMO_GNN = ["epochs=2", "refit=false"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/small", help="base dataset with truth/ (default: %(default)s)")
    parser.add_argument("--out", default="runs/loop-demo", help="demo directory (default: %(default)s)")
    parser.add_argument("--plot", default="docs/img/loop_demo.png", help="plot file (default: %(default)s)")
    parser.add_argument("--shift", default="cold_surge", choices=[k for k in SHIFT_KINDS if k != "none"])
    parser.add_argument("--max-users", type=int, default=3000, help="simulated users (default: %(default)s)")
    parser.add_argument("--sessions-per-day", type=float, default=2000.0)
    parser.add_argument("--reference-days", type=int, default=7)
    parser.add_argument("--days", type=int, default=4, help="monitored days (default: %(default)s)")
    parser.add_argument("--shift-day", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gnn-set", action="append", default=None, metavar="KEY=VALUE",
                        help="trainer settings for the GNN, champion and challenger, repeatable (default: "
                             + " ".join(DEMO_GNN) + ")")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from recsys.tracking import configure_tracking

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (Path(args.data) / "truth").is_dir():
        print(f"retrain demo: error: {args.data}: no truth/ (run python -m data_gen --preset small --out {args.data})")
        return 2
    # the demo's own registry, unless one is configured; the trainers (subprocesses) inherit it
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out.resolve()}/mlflow.db")
    configure_tracking(None)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    champion_dir = _champion(args, out)
    timings["champion training"] = time.perf_counter() - t

    t = time.perf_counter()
    from monitoring.scenarios import ScenarioConfig, load_world, simulate

    world = load_world(args.data, max_users=args.max_users, seed=args.seed)
    scenario = simulate(world, ScenarioConfig(
        kind=args.shift, reference_days=args.reference_days, days=args.days, shift_day=args.shift_day,
        sessions_per_day=args.sessions_per_day, seed=args.seed))  # fmt: skip
    timings["traffic"] = time.perf_counter() - t

    t = time.perf_counter()
    alarm_ts, drift = _monitor(args.data, scenario)
    timings["drift monitor"] = time.perf_counter() - t
    if alarm_ts is None:
        print("retrain demo: the monitor raised no alarm; nothing retrained")
        return 1
    print(f"shift at +{(scenario.shift_ts - scenario.monitor_start_ts) / 3600:.0f} h, alarm at "
          f"+{(alarm_ts - scenario.monitor_start_ts) / 3600:.0f} h ({', '.join(drift)}): "
          f"delay {(alarm_ts - scenario.shift_ts) / 3600:.0f} h")  # fmt: skip

    t = time.perf_counter()
    state = _retrain(args, out, scenario, alarm_ts)
    timings["loop"] = time.perf_counter() - t
    experiment = state.steps["experiment:gnn"]
    promoted = state.steps["promote:gnn"]["promoted"]
    new_dir = state.steps["train:gnn"]["bundle"] if promoted else champion_dir

    t = time.perf_counter()
    figures = _clicks_per_list(args, world, scenario, champion_dir, new_dir, alarm_ts)
    timings["clicks per list"] = time.perf_counter() - t
    summary = {
        "shift": args.shift, "shift_ts": scenario.shift_ts, "alarm_ts": alarm_ts, "drift_inputs": drift,
        "detection_delay_hours": (alarm_ts - scenario.shift_ts) / 3600, "experiment": experiment,
        "promoted": promoted, **figures["summary"], "seconds": {k: round(v, 1) for k, v in timings.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    _plot(figures, scenario, alarm_ts, args.plot)
    s = figures["summary"]
    print("| period | served model | clicks per list |\n|---|---|---:|")
    print(f"| before the shift | champion v1 | {s['before_shift']:.3f} |")
    print(f"| after the shift | champion v1 | {s['after_shift_old']:.3f} |")
    print(f"| after the shift | {'retrained (promoted)' if promoted else 'champion v1 (not promoted)'} | {s['after_shift_new']:.3f} |")
    print(f"experiment: {experiment.get('verdict')}; plot {args.plot}; wall {summary['wall_seconds']:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")  # fmt: skip
    return 0


def _gnn_settings(args) -> list[str]:
    return list(DEMO_GNN if args.gnn_set is None else args.gnn_set)


def _champion(args, out: Path) -> str:
    """``gnn@champion`` of the demo's registry, trained on the base data when there is none."""
    import subprocess
    import sys

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from recsys.tracking import resolve_model_ref
    from retrain.loop import REPO

    try:
        MlflowClient().get_model_version_by_alias("gnn", "champion")
    except MlflowException:  # absent: train it
        cmd = [sys.executable, str(REPO / "training" / "train_gnn.py"), "--config", "configs/train/gnn_small.yaml",
               "--set", f"data.source={Path(args.data).resolve()}", "--device", "cpu",
               "--set", f"checkpoint_dir={out.resolve() / 'checkpoints-champion'}",
               "--out", str(out.resolve() / "champion"), "--alias", "champion",
               *(a for kv in _gnn_settings(args) for a in ("--set", kv))]  # fmt: skip
        print("training the champion GNN on the base data")
        with open(out / "train-champion.log", "w") as f:
            subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)
    return str(resolve_model_ref("gnn@champion", out / "registry" / "champion"))


def _monitor(data: str, scenario) -> tuple[float | None, list[str]]:
    from monitoring.config import DriftConfig
    from monitoring.drift import monitor
    from monitoring.features import load_catalog, traffic_tables
    from monitoring.profile import build_profile

    config = DriftConfig()
    catalog = load_catalog(data, config.cold_threshold)
    profile = build_profile(traffic_tables(*scenario.reference(), catalog), config, source="reference days",
                            catalog=catalog)  # fmt: skip
    result = monitor(profile, traffic_tables(*scenario.monitored(), catalog), config, origin=scenario.monitor_start_ts)
    alarm = result.first_alarm_after(scenario.monitor_start_ts)
    return (None, []) if alarm is None else (float(alarm.raised_at), list(alarm.inputs))


def _retrain(args, out: Path, scenario, alarm_ts: float):
    from monitoring.scenarios import write_events
    from retrain.loop import LoopConfig, run_loop

    events = out / "events"
    if not (events / "exposures").is_dir():
        ex = scenario.exposures[scenario.exposures["ts"] < alarm_ts]
        oc = scenario.outcomes[scenario.outcomes["request_id"].isin(set(ex["request_id"]))]
        write_events(events, ex, oc)
    config = LoopConfig(base=str(args.data), events=str(events), run_dir=str(out / "loop"), models=["gnn"],
                        train_overrides={"gnn": _gnn_settings(args)}, eval_days=1.0, seed=args.seed)  # fmt: skip
    return run_loop(config)


def _clicks_per_list(args, world, scenario, old_dir: str, new_dir: str, alarm_ts: float) -> dict:
    """Expected clicks per list of each model per 4-hour window of the monitored period (truth)."""
    from retrain.simulator import expected_clicks, load_click_model, model_lists

    click_model = load_click_model(args.data)
    per_user = {}
    for name, bundle in (("old", old_dir), ("new", new_dir)):
        lists = model_lists("gnn", bundle, args.data, world.user_ids, 20, world.end_ts)
        per_user[name] = expected_clicks(click_model, world.user_ids, lists, None).sum(1)  # the scenario's clock
    ex = scenario.exposures
    row_of = {int(u): r for r, u in enumerate(world.user_ids)}
    rows = ex["user"].map(lambda u: row_of[int(u)]).to_numpy()
    ts = ex["ts"].to_numpy()
    width = 4 * 3600
    edges = np.arange(scenario.monitor_start_ts, scenario.end_ts + 1, width)
    windows = {"start": edges[:-1].tolist(), "old": [], "new": []}
    for lo, hi in zip(edges[:-1], edges[1:]):
        mine = rows[(ts >= lo) & (ts < hi)]
        for name in ("old", "new"):
            windows[name].append(float(per_user[name][mine].mean()) if len(mine) else float("nan"))

    def mean(name, lo, hi):
        return float(per_user[name][rows[(ts >= lo) & (ts < hi)]].mean())

    summary = {
        "before_shift": mean("old", scenario.monitor_start_ts, scenario.shift_ts),
        "after_shift_old": mean("old", scenario.shift_ts, scenario.end_ts),
        "after_shift_new": mean("new", scenario.shift_ts, scenario.end_ts),
        "after_alarm_served": mean("new", alarm_ts, scenario.end_ts),
    }
    return {"windows": windows, "summary": summary}


def _plot(figures: dict, scenario, alarm_ts: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = figures["windows"]
    hours = (np.asarray(w["start"]) - scenario.monitor_start_ts) / 3600 + 2
    served = np.where(np.asarray(w["start"]) + 4 * 3600 <= alarm_ts, w["old"], w["new"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(hours, w["old"], "--", color="grey", label="old champion (kept)")
    ax.plot(hours, served, "-o", ms=3, color="C0", label="served (promoted at the alarm)")
    for x, label, c in ((scenario.shift_ts, "shift", "C3"), (alarm_ts, "alarm -> retrain", "C2")):
        ax.axvline((x - scenario.monitor_start_ts) / 3600, color=c, lw=1)
        ax.text((x - scenario.monitor_start_ts) / 3600, ax.get_ylim()[1], f" {label}", color=c, va="top", fontsize=8)
    ax.set_xlabel("simulated hours into the monitored period (4 h windows)")
    ax.set_ylabel("expected clicks per list (truth)")
    ax.set_title(f"Closing the loop: {scenario.config.kind}")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
