"""The loop, step by step, resumable: a state file per loop run; a re-run skips finished steps.

Steps (each an MLflow run nested under the loop's run, tagged with the data hash and git commit):

1. ``dataset``: flushed events + the base dataset -> ``<run_dir>/data`` (:mod:`retrain.dataset`);
2. ``validate``: ``data_gen validate`` on it (a problem stops the loop, naming file and column);
3. ``train:<kind>``: the kind's own trainer on the new data (``training/train_gnn.py``,
   ``training.train_ranker``, ``training.train_mf``) in a subprocess; it registers a new version and
   moves the ``challenger`` alias to it;
4. ``experiment:<kind>``: ``<kind>@challenger`` against ``<kind>@champion`` in the simulator
   (:mod:`retrain.simulator`) on the users of the last ``eval_days`` of the logs;
5. ``promote:<kind>``: moves ``champion`` to the challenger's version only when the verdict is ``ship``.

The state file (``<run_dir>/state.json``) is rewritten atomically after every step, so a loop killed in
step N re-runs from step N; a second run of a finished loop changes nothing (no new model version, no
alias move). The registry is the one of ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from feedrec_common.config import StrictModel

__all__ = ["LoopConfig", "LoopState", "run_loop", "steps_of", "LoopError", "MODEL_KINDS"]

REPO = Path(__file__).resolve().parent.parent
MODEL_KINDS = ("gnn", "ranker", "mf")
DAY = 86_400


class LoopError(RuntimeError):
    """A step failed; the message names the step and what to look at."""


class LoopConfig(StrictModel):
    """One loop run (``configs/retrain/default.yaml``; any key with ``--set``).

    Args:
        base (str): The base data_gen dataset (its ``truth/`` is the simulator's judge only).
        events (str): Event log directory, flushed (``python -m abtest flush``).
        run_dir (str): This loop run's directory: state file, dataset, bundles, report.
        models (list[str]): Model kinds to retrain: ``gnn``, ``ranker``, ``mf``. (default: gnn, ranker)
        train_configs (dict): Kind -> trainer config file.
        train_overrides (dict): Kind -> extra ``key=value`` settings for its trainer. (default: none)
        eval_days (float): The experiment's traffic: users of the last days of the logs. (default: 2)
        alpha (float): Significance level of the ship decision. (default: 0.05)
        k (int): List length. (default: 20)
        seed (int): Seed of the simulated clicks. (default: 0)
    """

    base: str = "data/small"
    events: str = "events/demo"
    run_dir: str = "runs/retrain/latest"
    models: list[str] = Field(default_factory=lambda: ["gnn", "ranker"])
    train_configs: dict[str, str] = Field(default_factory=lambda: {
        "gnn": "configs/train/gnn_small.yaml", "ranker": "configs/train/ranker_small.yaml",
        "mf": "configs/train/mf_small.yaml"})  # fmt: skip
    train_overrides: dict[str, list[str]] = Field(default_factory=dict)
    eval_days: float = Field(2.0, gt=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    k: int = Field(20, gt=0)
    seed: int = 0

    def model_post_init(self, _context) -> None:
        bad = [m for m in self.models if m not in MODEL_KINDS]
        if bad or not self.models:
            raise ValueError(f"models: {bad or 'empty'}; expected some of {list(MODEL_KINDS)}")


def steps_of(config: LoopConfig) -> list[str]:
    """The ordered step names of a loop run."""
    kinds = list(config.models)
    return ["dataset", "validate", *(f"train:{k}" for k in kinds), *(f"experiment:{k}" for k in kinds),
            *(f"promote:{k}" for k in kinds)]  # fmt: skip


@dataclass
class LoopState:
    """``state.json``: the config and, per finished step, its outputs."""

    path: Path
    config: dict
    steps: dict[str, dict] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @classmethod
    def open(cls, run_dir: Path, config: LoopConfig) -> LoopState:
        path = run_dir / "state.json"
        wanted = config.model_dump(mode="json")
        if not path.exists():
            return cls(path, wanted)
        saved = json.loads(path.read_text())
        if saved["config"] != wanted:
            changed = sorted(k for k in wanted if saved["config"].get(k) != wanted[k])
            raise LoopError(f"{path}: this loop run was started with other settings ({', '.join(changed)}); "
                            "use a new --run-dir")  # fmt: skip
        return cls(path, saved["config"], saved["steps"], saved.get("mlflow_run_id"))

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"config": self.config, "steps": self.steps, "mlflow_run_id": self.mlflow_run_id},
                                  indent=2, sort_keys=True) + "\n")  # fmt: skip
        os.replace(tmp, self.path)  # a kill leaves the old state or the new one, never half of one

    def done(self, step: str) -> bool:
        return step in self.steps


def run_loop(config: LoopConfig, *, stop_after: str | None = None, log=print) -> LoopState:
    """Run (or resume) the loop; returns the state. ``stop_after``: end after that step (as if killed)."""
    import mlflow

    from recsys.tracking import start_run

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = LoopState.open(run_dir, config)
    names = steps_of(config)
    if stop_after is not None and stop_after not in names:
        raise LoopError(f"--stop-after {stop_after}: not a step of this loop ({', '.join(names)})")
    pending = [s for s in names if not state.done(s)]
    for s in names:
        if state.done(s):
            log(f"[{s}] done before, skipped")
    if not pending:
        return state
    # a resumed loop logs its remaining steps under the same parent run
    with (mlflow.start_run(run_id=state.mlflow_run_id) if state.mlflow_run_id
          else start_run("retrain", f"loop {run_dir.name}", params=config.model_dump(mode="json"))) as active:  # fmt: skip
        state.mlflow_run_id = active.info.run_id
        state.save()
        for step in pending:
            t = time.perf_counter()
            data_hash = state.steps.get("dataset", {}).get("dataset_hash")
            with start_run("retrain", step, nested=True, tags={"retrain.step": step, "retrain.run_dir": str(run_dir)},
                           dataset_fingerprint=data_hash) as child:  # fmt: skip
                out = STEPS[step.split(":")[0]](config, state, step.split(":")[-1], log)
                out["seconds"] = round(time.perf_counter() - t, 1)
                mlflow.log_metrics({k: float(v) for k, v in _flat(out).items() if isinstance(v, int | float)})
                out["mlflow_run_id"] = child.info.run_id
            state.steps[step] = out
            state.save()
            log(f"[{step}] done in {out['seconds']:.0f} s")
            if step == stop_after:
                log(f"stopped after {step} (--stop-after); run again to resume")
                break
    return state


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


# -- the steps: (config, state, kind, log) -> outputs for the state file -------------------------------
def step_dataset(config: LoopConfig, state: LoopState, _kind: str, log) -> dict:
    from retrain.dataset import as_dict, build_dataset

    result = build_dataset(config.base, config.events, Path(config.run_dir) / "data")
    log(f"[dataset] {result.data_dir}: {result.counts}")
    return as_dict(result)


def step_validate(config: LoopConfig, state: LoopState, _kind: str, log) -> dict:
    from data_gen.validate import validate_dataset

    problems = validate_dataset(state.steps["dataset"]["data_dir"])
    if problems:
        raise LoopError("validate: the dataset built from the logs fails data_gen validate:\n  "
                        + "\n  ".join(map(str, problems)))  # fmt: skip
    return {"problems": 0}


def _trainer_command(config: LoopConfig, kind: str, data_dir: str, out: Path) -> list[str]:
    cfg = ["--config", config.train_configs[kind], "--set", f"data.source={data_dir}", "--out", str(out)]
    extra = [a for kv in config.train_overrides.get(kind, []) for a in ("--set", kv)]
    if kind == "gnn":
        return [sys.executable, str(REPO / "training" / "train_gnn.py"), *cfg, "--device", "cpu",
                "--set", f"checkpoint_dir={out.parent / 'checkpoints-gnn'}", "--register", "gnn",
                "--alias", "challenger", *extra]  # fmt: skip
    module = {"ranker": "training.train_ranker", "mf": "training.train_mf"}[kind]
    registered = ["--register", "mf"] if kind == "mf" else []
    return [sys.executable, "-m", module, *cfg, *registered, "--alias", "challenger", *extra]


def step_train(config: LoopConfig, state: LoopState, kind: str, log) -> dict:
    from mlflow import MlflowClient

    out = Path(config.run_dir) / "bundles" / kind
    cmd = _trainer_command(config, kind, state.steps["dataset"]["data_dir"], out)
    log(f"[train:{kind}] {' '.join(cmd[1:])}")
    logfile = Path(config.run_dir) / f"train-{kind}.log"
    with open(logfile, "w") as f:
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
        raise LoopError(f"train:{kind}: the trainer exited {code}; log {logfile}:\n{tail}")
    version = MlflowClient().get_model_version_by_alias(kind, "challenger")
    return {"bundle": str(out), "registered": kind, "version": str(version.version)}


def step_experiment(config: LoopConfig, state: LoopState, kind: str, log) -> dict:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from monitoring.events import read_events
    from recsys.tracking import resolve_model_ref
    from retrain.simulator import run_experiment

    try:
        champion = MlflowClient().get_model_version_by_alias(kind, "champion")
    except MlflowException:  # no champion yet: the first trained model is promoted as is
        log(f"[experiment:{kind}] no {kind}@champion: the challenger wins by default")
        return {"verdict": "ship", "reason": "no champion", "champion_version": None}
    dataset = state.steps["dataset"]
    exposures, _ = read_events(config.events, since=dataset["end_ts"] - config.eval_days * DAY)
    users, requests = np.unique(exposures["user"].to_numpy(np.int64), return_counts=True)
    run_dir = Path(config.run_dir)
    challenger_version = state.steps[f"train:{kind}"]["version"]
    refs = {"champion": f"{kind}/{champion.version}", "challenger": f"{kind}/{challenger_version}"}
    dirs = {name: str(resolve_model_ref(ref, run_dir / "registry" / name / kind)) for name, ref in refs.items()}
    result = run_experiment(
        kind, (refs["champion"], dirs["champion"]), (refs["challenger"], dirs["challenger"]),
        truth_dir=config.base, data_dir=dataset["data_dir"], user_ids=users, requests=requests,
        now=int(dataset["end_ts"]), salt=f"retrain-{run_dir.name}-{kind}", k=config.k, alpha=config.alpha,
        seed=config.seed,
    )  # fmt: skip
    log(f"[experiment:{kind}] {result.summary()}")
    report = run_dir / f"experiment-{kind}.json"
    report.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return {**result.as_dict(), "champion_version": str(champion.version), "report": str(report)}


def step_promote(config: LoopConfig, state: LoopState, kind: str, log) -> dict:
    from mlflow import MlflowClient

    verdict = state.steps[f"experiment:{kind}"]["verdict"]
    version = state.steps[f"train:{kind}"]["version"]
    if verdict != "ship":
        log(f"[promote:{kind}] verdict {verdict}: {kind}@champion stays")
        return {"promoted": False, "verdict": verdict}
    MlflowClient().set_registered_model_alias(kind, "champion", version)
    log(f"[promote:{kind}] {kind}@champion -> version {version}")
    return {"promoted": True, "verdict": verdict, "champion_version": version,
            "previous_champion": state.steps[f"experiment:{kind}"].get("champion_version")}  # fmt: skip


STEPS = {"dataset": step_dataset, "validate": step_validate, "train": step_train,
         "experiment": step_experiment, "promote": step_promote}  # fmt: skip
