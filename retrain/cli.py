"""``python -m retrain run|demo``: the retraining loop from the service's flushed logs.

Examples::

    python -m abtest flush --events-dir events/demo
    python -m retrain run --base data/small --events events/demo --run-dir runs/retrain/2026-12-01
    python -m retrain run ... --models gnn --stop-after train:gnn     # then the same command resumes
    python -m retrain demo --data data/small --out runs/loop-demo       # the closed loop, shown

Exit codes: 0 done (or stopped by ``--stop-after``), 1 a step failed (the message names it), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from feedrec_common.config import ConfigError, add_config_arguments, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retrain", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume one loop (retrain.loop)", description=_loop_doc(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_config_arguments(run)
    run.add_argument("--base", help="base data_gen dataset (config key base)")
    run.add_argument("--events", help="flushed event log directory (config key events)")
    run.add_argument("--run-dir", help="this loop run's directory: state.json, data, bundles (config key run_dir)")
    run.add_argument("--models", help="comma-separated kinds to retrain: gnn, ranker, mf (config key models)")
    run.add_argument("--stop-after", metavar="STEP", help="end after this step (e.g. train:gnn); a re-run resumes")
    run.add_argument("--tracking-uri", help="MLflow store when MLFLOW_TRACKING_URI is unset")
    demo = sub.add_parser("demo", help="drift injected into simulated traffic, alarm, retrain, promotion, recovery")
    from retrain.demo import add_arguments

    add_arguments(demo)
    return parser


def _loop_doc() -> str:
    from retrain import loop

    return loop.__doc__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from retrain.demo import run

        return run(args)
    from recsys.tracking import configure_tracking
    from retrain.loop import LoopConfig, LoopError, run_loop

    overrides = list(args.overrides)
    for key, value in (("base", args.base), ("events", args.events), ("run_dir", args.run_dir)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.models:
        overrides.append(f"models=[{args.models}]")
    try:
        config = load_config(LoopConfig, args.config, overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    for label, path in (("--base", Path(config.base)), ("--events", Path(config.events))):
        if not path.is_dir():
            return _fail(f"{label} {path}: no such directory")
    if not (Path(config.base) / "manifest.json").is_file():
        return _fail(f"--base {config.base}: no manifest.json (not a data_gen dataset)")
    configure_tracking(args.tracking_uri)
    try:
        state = run_loop(config, stop_after=args.stop_after)
    except (LoopError, FileNotFoundError, ValueError) as exc:
        print(f"retrain: error: {exc}", file=sys.stderr)
        return 1
    promoted = [s for s, out in state.steps.items() if s.startswith("promote:") and out.get("promoted")]
    print(f"retrain: {len(state.steps)} steps done; promoted: {', '.join(promoted) or 'none'}; state {state.path}")
    return 0


def _fail(message: str) -> int:
    print(f"retrain: error: {message}", file=sys.stderr)
    return 2
