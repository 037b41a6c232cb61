"""Train a matrix-factorisation model (ALS or BPR from `implicit`), evaluate it, track it in MLflow.

Launch::

    python -m training.train_mf --config configs/train/mf_gowalla.yaml
    python -m training.train_mf --config configs/train/mf_small.yaml --set model.als.factors=64
    python -m training.train_mf --config configs/train/mf_small.yaml --search --alias champion
    python -m training.train_mf --config configs/train/mf_auto.yaml --set data.source=<folder> --max-minutes 45
    MLFLOW_TRACKING_URI=sqlite:////tmp/mlflow.db python -m training.train_mf --config ...

What one run does, top to bottom (the protocol every trainer shares: ``training/protocol.py``):

1. Load the split (``data.source``: ``gowalla``, a ``data_gen`` folder split in time, or a LightGCN
   folder). When the split has no validation set (Gowalla), one is carved out of train: the
   ``data.valid_fraction`` latest items of ``data.valid_users`` users, seeded by ``data.valid_seed``
   (the same carve-out ``train_gnn.py`` selects on).
2. Selection fit(s) on the selection view of the split (its test set sealed). Validation Recall@K
   (K = ``max(eval.ks)``) on ``eval.sample_users`` users is logged every ``eval.every`` iterations
   as a step metric. With ``--search`` (or ``search.enabled``), every point of ``search.space``
   (grid, or ``search.n_trials`` random points) is a nested child run and the best by *validation*
   Recall@K wins; ``search.method: asha`` is the budgeted search of ``training/search.py`` instead
   (TPE over log-uniform ranges, successive halving and early stopping on validation every
   ``eval.every`` iterations; ``--max-minutes`` bounds search + refit + test; the refit trains the
   winner for the iterations of its best evaluation).
3. Final model: the chosen hyper-parameters are refit on everything before the test window (the
   full training set when validation was carved out of it; train + validation positives for a
   temporal split), as production would before serving. It is evaluated on test once (full
   ranking, train and validation items excluded; slices all/cold/heavy).
4. Logged to MLflow: parameters (flattened), step metrics, valid/test metrics, dataset fingerprint,
   split hash, git commit, the config file and the resolved config, and the model bundle (also
   written to ``--out``), registered as a new version of ``--register`` (default ``mf``), with
   ``--alias`` (e.g. ``champion``) moved to it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from typing import Any, Literal

import mlflow
import numpy as np
from pydantic import Field, ValidationError, model_validator
from tqdm import tqdm

from feedrec_common.config import ConfigError, StrictModel, add_config_arguments, load_config
from recsys.bundle import BundleError
from recsys.data import DataError, Dataset, Split
from recsys.evaluation import EvalResult, evaluate, mlflow_metric_name
from recsys.models.mf import ALSConfig, BPRConfig, MFConfig
from recsys.tracking import configure_tracking, log_bundle, register_bundle, start_run
from training.protocol import DataConfig, EvalConfig, Protocol, TrackingConfig, load_protocol
from training.search import Budget, Range, SearchConfig, TrialResult, run_search

DEFAULT_CONFIG = "configs/train/mf_small.yaml"


# --- configuration ---------------------------------------------------------------------------
class SearchSection(SearchConfig):
    """Hyper-parameter search (model keys -> candidate lists or ranges), used with ``--search``.

    ``grid``: every combination of the lists; ``random``: ``n_trials`` of them; ``asha``: the
    budgeted search of ``training/search.py`` (TPE points of log-uniform ranges or lists, successive
    halving and early stopping on validation every ``eval.every`` iterations; the refit trains the
    winner for the iterations of its best evaluation).

    Args:
        method (str): ``"grid"``, ``"random"`` or ``"asha"``. (default: ``"random"``)
        n_trials (int, optional): Points (``random``) / at most this many trials (``asha``; ``None``:
            until ``--max-minutes``). (default: 8)
        enabled (bool): Search even without ``--search`` (``configs/train/mf_auto.yaml``). (default: False)
    """

    method: Literal["grid", "random", "asha"] = "random"
    n_trials: int | None = Field(8, ge=1)
    enabled: bool = False


class TrackingSection(TrackingConfig):
    experiment: str = "mf"
    registered_model: str | None = "mf"


class TrainMFConfig(StrictModel):
    data: DataConfig = Field(default_factory=DataConfig)
    model: MFConfig = Field(default_factory=MFConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchSection = Field(default_factory=SearchSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    out: str = "bundles/mf"

    @model_validator(mode="after")
    def _check_space(self) -> TrainMFConfig:
        params = self.model.params
        for key, values in self.search.space.items():
            if key not in type(params).model_fields:
                raise ValueError(f"search.space.{key}: not a {self.model.kind} hyper-parameter")
            if isinstance(values, Range):
                if self.search.method != "asha":
                    raise ValueError(f"search.space.{key}: a range needs search.method asha (grid/random take lists)")
                values = [int(values.low) if values.integer else values.low,
                          int(values.high) if values.integer else values.high]
            for value in values:
                try:
                    with_value(params, {key: value})
                except ValidationError as exc:
                    raise ValueError(f"search.space.{key}: {value!r}: {exc.errors()[0]['msg']}") from None
        return self

    def logged_params(self, search: bool) -> dict[str, Any]:
        """What MLflow records: the active model's hyper-parameters only (and the space when searching)."""
        out = self.model_dump(mode="json", exclude={"model"} | (set() if search else {"search"}))
        return {"model": {"kind": self.model.kind, **self.model.params.model_dump(mode="json")}, **out}


def with_value(params: ALSConfig | BPRConfig, update: dict[str, Any]) -> ALSConfig | BPRConfig:
    """A validated copy of ``params`` with ``update`` applied."""
    return type(params).model_validate({**params.model_dump(), **update})


# --- one fit ---------------------------------------------------------------------------------
def fit_model(
    params: ALSConfig | BPRConfig, train: Dataset, cfg: TrainMFConfig, curve_on: Split | None = None
) -> tuple[Any, float]:
    """Fit on ``train``; with ``curve_on``, log its validation Recall@K on a user sample as steps."""
    model = cfg.model.build(**params.model_dump())
    k = cfg.eval.k
    metric = mlflow_metric_name(f"valid_sample/recall@{k}")

    def callback(iteration: int, m: Any) -> None:
        step = iteration + 1
        if step % cfg.eval.every == 0 or step == params.iterations:
            res = evaluate(m, curve_on, on="valid", ks=(k,), max_users=cfg.eval.sample_users, slices=False)
            mlflow.log_metric(metric, res.metrics[f"recall@{k}"], step=step)

    start = time.perf_counter()
    model.fit(train, callback=callback if curve_on is not None else None)
    return model, time.perf_counter() - start


def log_result(result: EvalResult, prefix: str) -> None:
    mlflow.log_metrics(result.mlflow_metrics(prefix))


def search_points(cfg: TrainMFConfig) -> list[dict[str, Any]]:
    """Grid (every combination) or ``n_trials`` distinct random combinations of ``search.space``."""
    keys = list(cfg.search.space)
    assert cfg.search.method != "asha" and cfg.search.n_trials is not None
    grid = [dict(zip(keys, values)) for values in itertools.product(*(cfg.search.space[k] for k in keys))]
    if cfg.search.method == "random" and len(grid) > cfg.search.n_trials:
        rng = np.random.default_rng(cfg.search.seed)
        grid = [grid[i] for i in sorted(rng.choice(len(grid), size=cfg.search.n_trials, replace=False))]
    return grid


def asha_search(cfg: TrainMFConfig, protocol: Protocol, budget: Budget, run_name: str
                ) -> tuple[ALSConfig | BPRConfig, float, list[dict[str, Any]]]:
    """``training/search.py`` over ``search.space``; returns the winner's parameters (iterations =
    those of its best evaluation), its validation Recall@K and one row per trial."""
    selection = protocol.selection
    every, k, kind = cfg.eval.every, cfg.eval.k, cfg.model.kind
    n_valid = int((np.diff(selection.valid.indptr) > 0).sum())
    n_eval = min(n_valid, cfg.eval.sample_users or n_valid)
    n_test = int((np.diff(protocol.split.test.indptr) > 0).sum())
    refit_scale = protocol.refit_data().n_interactions / max(selection.train.n_interactions, 1)

    def iterations_at(params: ALSConfig | BPRConfig, evaluation: int) -> int:
        return min(evaluation * every, params.iterations)

    def reserve(r: TrialResult) -> float:
        test_eval = r.eval_seconds / max(r.steps, 1) * n_test / max(n_eval, 1)
        # two fits of the winner follow the search: on the selection data (the reported validation
        # result) and the refit on everything before the test window
        per_step = r.seconds / max(r.steps, 1)
        # + one more evaluation period of search, so the next one only starts when it fits too
        return per_step * (r.best_step * (1.0 + refit_scale) + 1) + r.eval_seconds / max(r.steps, 1) + test_eval + 10.0

    def fit(point: dict[str, Any], reporter: Any) -> None:
        params = with_value(cfg.model.params, point)
        clock = [time.perf_counter()]

        def callback(iteration: int, m: Any) -> None:
            step = iteration + 1
            if step % every and step != params.iterations:
                return
            train_s = time.perf_counter() - clock[0]
            t = time.perf_counter()
            res = evaluate(m, selection, on="valid", ks=(k,), max_users=cfg.eval.sample_users, slices=False)
            mlflow.log_metric(mlflow_metric_name(f"valid_sample/recall@{k}"), res.metrics[f"recall@{k}"], step=step)
            reporter.report(res.metrics[f"recall@{k}"], train_s, time.perf_counter() - t)
            clock[0] = time.perf_counter()

        cfg.model.build(**params.model_dump()).fit(selection.train, callback=callback)

    def child_run(number: int, point: dict[str, Any]):
        return start_run(cfg.tracking.experiment, f"{run_name}-trial{number:02d}",
                         params={"model": {"kind": kind, **with_value(cfg.model.params, point).model_dump()}},
                         tags={"model": kind, "trial": number}, nested=True,
                         dataset_fingerprint=selection.train.fingerprint(), split_hash=selection.hash())

    def trial_done(r: TrialResult) -> None:
        mlflow.set_tag("state", r.state)
        mlflow.log_metrics({mlflow_metric_name(f"valid/recall@{k}"): max(r.value, -1.0), "fit_seconds": r.seconds,
                            "best_iterations": iterations_at(with_value(cfg.model.params, r.params), r.best_step)})

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 (stdout carries the summary)
    winner, results = run_search(cfg.search, budget, fit, reserve=reserve, child_run=child_run,
                                 trial_done=trial_done, log=log)
    best = with_value(cfg.model.params, winner.params)
    best = with_value(best, {"iterations": iterations_at(best, winner.best_step)})
    trials = [{"point": r.params, "valid": r.value, "run_id": r.run_id, "state": r.state,
               "iterations": iterations_at(with_value(cfg.model.params, r.params), r.best_step)} for r in results]
    return best, winner.value, trials


# --- the run ---------------------------------------------------------------------------------
def run(cfg: TrainMFConfig, config_path: str | None, search: bool, budget: Budget | None = None) -> dict[str, Any]:
    """Everything after argument parsing; returns a summary (used by tests and the printout).

    Args:
        budget (Budget, optional): Wall-clock budget of an ``asha`` search + refit + test.
    """
    budget = budget or Budget(None)
    protocol = load_protocol(cfg.data, events=False)  # MF reads only the positives
    split = protocol.split
    selection = protocol.selection  # test sealed: nothing in step 1 can read it
    dataset_name = split.train.name
    ks = tuple(cfg.eval.ks)
    primary = cfg.eval.primary_metric
    kind = cfg.model.kind
    run_name = cfg.tracking.run_name or f"{kind}-{dataset_name}{'-search' if search else ''}"

    with start_run(
        cfg.tracking.experiment,
        run_name,
        params=cfg.logged_params(search),
        tags={"model": kind, "dataset": dataset_name, "split.kind": split.kind, "valid": protocol.describe()},
        dataset_fingerprint=protocol.source_train.fingerprint(),
        split_hash=split.hash(),
    ) as parent:
        if config_path is not None:
            mlflow.log_artifact(config_path, artifact_path="config")
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/resolved.yaml")

        # 1. selection: one fit, or one nested run per search point, judged on validation only
        params = cfg.model.params
        trials: list[dict[str, Any]] = []
        if search and cfg.search.method == "asha":
            params, best_score, trials = asha_search(cfg, protocol, budget, run_name)
            mlflow.log_params({f"best.{k}": v for k, v in params.model_dump().items()})
            mlflow.log_metric(mlflow_metric_name(f"search/best_valid/{primary}"), best_score)
            mlflow.log_metric("search/trials", len(trials))
            selection_model, _ = fit_model(params, selection.train, cfg)
        elif search:
            points = search_points(cfg)
            best_score = -math.inf
            for i, point in enumerate(tqdm(points, desc="search", unit="trial", file=sys.stderr)):
                trial_params = with_value(cfg.model.params, point)
                with start_run(
                    cfg.tracking.experiment, f"{run_name}-trial{i:02d}",
                    params={"model": {"kind": kind, **trial_params.model_dump()}},
                    tags={"model": kind, "trial": i}, nested=True,
                    dataset_fingerprint=selection.train.fingerprint(), split_hash=selection.hash(),
                ) as child:  # fmt: skip
                    model, seconds = fit_model(trial_params, selection.train, cfg, curve_on=selection)
                    res = evaluate(model, selection, on="valid", ks=ks, slices=False)
                    log_result(res, "valid")
                    mlflow.log_metric("fit_seconds", seconds)
                score = res.metrics[primary]
                trials.append({"point": point, "valid": score, "run_id": child.info.run_id})
                if score > best_score:  # ties keep the earlier trial
                    best_score, params, selection_model = score, trial_params, model
            mlflow.log_params({f"best.{k}": v for k, v in params.model_dump().items()})
            mlflow.log_metric(mlflow_metric_name(f"search/best_valid/{primary}"), best_score)
        else:
            selection_model, _ = fit_model(params, selection.train, cfg, curve_on=selection)
        valid_result = evaluate(selection_model, selection, on="valid", ks=ks)
        log_result(valid_result, "valid")

        # 2. final model: refit with the chosen hyper-parameters on everything before the test
        #    window, as production would before serving; the one look at test masks train and
        #    validation items.
        final, fit_seconds = fit_model(params, protocol.refit_data(), cfg)
        test_result = evaluate(final, split, on="test", ks=ks)
        log_result(test_result, "test")
        mlflow.log_metric("fit_seconds", fit_seconds)

        # 3. bundle: local copy, MLflow artifact, registry version
        metrics = {f"valid/{k}": v for k, v in valid_result.metrics.items()}
        metrics |= {f"test/{k}": v for k, v in test_result.metrics.items()}
        bundle = final.save(cfg.out, metrics=metrics)
        log_bundle(bundle)
        version = None
        if cfg.tracking.registered_model:
            version = register_bundle(parent.info.run_id, cfg.tracking.registered_model, alias=cfg.tracking.alias)
            mlflow.set_tag("registered_model", f"{cfg.tracking.registered_model}/{version}")

    return {
        "run_id": parent.info.run_id,
        "dataset": dataset_name,
        "kind": kind,
        "params": params.model_dump(),
        "valid": valid_result,
        "test": test_result,
        "fit_seconds": fit_seconds,
        "trials": trials,
        "bundle": bundle,
        "registered": f"{cfg.tracking.registered_model}/{version}" if version else None,
        "alias": cfg.tracking.alias if version else None,
    }


def summary_markdown(summary: dict[str, Any], ks: list[int]) -> str:
    k = max(ks)
    lines = [
        f"## {summary['kind']} on {summary['dataset']}",
        "",
        f"| set | Recall@{k} | NDCG@{k} | users |",
        "|---|---:|---:|---:|",
    ]
    for name in ("valid", "test"):
        res: EvalResult = summary[name]
        lines.append(
            f"| {name} | {res.metrics[f'recall@{k}']:.4f} | {res.metrics[f'ndcg@{k}']:.4f} "
            f"| {int(res.metrics['n_users'])} |"
        )
    params = ", ".join(f"{key}={v}" for key, v in summary["params"].items())
    lines += [
        "",
        f"- params: {params}",
        f"- fit: {summary['fit_seconds']:.1f} s; bundle: {summary['bundle']}; MLflow run: {summary['run_id']}",
    ]
    if summary["registered"]:
        alias = f" (alias {summary['alias']})" if summary["alias"] else ""
        lines.append(f"- registered: {summary['registered']}{alias}")
    if summary["trials"]:
        lines += ["", "| trial | point | valid Recall |", "|---:|---|---:|"]
        lines += [f"| {i} | {t['point']} | {t['valid']:.4f} |" for i, t in enumerate(summary["trials"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train_mf", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_config_arguments(parser, default_config=DEFAULT_CONFIG)
    parser.add_argument("--search", action="store_true", help="hyper-parameter search over search.space")
    parser.add_argument("--register", metavar="NAME", help="registered model name (default: tracking.registered_model)")
    parser.add_argument("--no-register", action="store_true", help="do not register a model version")
    parser.add_argument("--alias", help="move this registry alias (e.g. champion) to the new version")
    parser.add_argument("--out", help="bundle directory (default: the config's out)")
    parser.add_argument("--tracking-uri", help="MLflow store when MLFLOW_TRACKING_URI is unset")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="budget of an asha search + refit + test (wall time of the whole run)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    overrides = list(args.overrides)
    if args.register:
        overrides.append(f"tracking.registered_model={args.register}")
    if args.no_register:
        overrides.append("tracking.registered_model=null")
    if args.alias:
        overrides.append(f"tracking.alias={args.alias}")
    if args.out:
        overrides.append(f"out={args.out}")
    try:
        cfg = load_config(TrainMFConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    search = args.search or cfg.search.enabled
    if search and cfg.search.method == "asha" and args.max_minutes is None and cfg.search.n_trials is None:
        print("error: an asha search needs --max-minutes or search.n_trials (else it never ends)", file=sys.stderr)
        return 2
    configure_tracking(args.tracking_uri)
    budget = Budget(args.max_minutes * 60 if args.max_minutes is not None else None, start=started)
    try:
        summary = run(cfg, args.config, search, budget)
    except (DataError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary_markdown(summary, cfg.eval.ks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
