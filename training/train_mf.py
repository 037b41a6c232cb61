"""Train a matrix-factorisation model (ALS or BPR from `implicit`), evaluate it, track it in MLflow.

Launch::

    python -m training.train_mf --config configs/train/mf_gowalla.yaml
    python -m training.train_mf --config configs/train/mf_small.yaml --set model.factors=64
    python -m training.train_mf --config configs/train/mf_small.yaml --search --alias champion
    MLFLOW_TRACKING_URI=sqlite:////tmp/mlflow.db python -m training.train_mf --config ...

What one run does, top to bottom:

1. Load the split (``data.source``: ``gowalla``, a ``data_gen`` folder split in time, or a LightGCN
   folder). Model selection needs a validation set that no reported model trained on; when the
   split has none (Gowalla), ``data.valid_frac`` of each user's training items are held out with a
   fixed seed (:func:`holdout_validation`) for selection only.
2. Selection fit(s) on the selection training set. Validation Recall@K on a user sample is logged
   every ``eval.every`` iterations as a step metric. With ``--search``, every point of
   ``search.space`` (grid, or ``search.n_trials`` random points) is a nested child run and the best
   by *validation* Recall@K wins; the test set is never looked at while choosing.
3. Final model: the chosen hyper-parameters are refit on everything before the test window (the
   full training set when validation was carved out of it; train + validation positives for a
   temporal split), as production would before serving. It is evaluated on test (full ranking, seen items excluded; slices all/cold/heavy).
4. Logged to MLflow: parameters (flattened), step metrics, valid/test metrics, dataset fingerprint,
   split hash, git commit, the config file and the resolved config, and the model bundle (also
   written to ``--out``), registered as a new version of ``--register`` (default ``mf``), with
   ``--alias`` (e.g. ``champion``) moved to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
import time
from typing import Any, Literal

import mlflow
import numpy as np
import scipy.sparse as sp
from pydantic import Field, ValidationError, model_validator
from tqdm import tqdm

from feedrec_common.config import ConfigError, StrictModel, add_config_arguments, load_config
from recsys.bundle import BundleError
from recsys.data import DataError, Split, load_split
from recsys.evaluation import EvalResult, evaluate, mlflow_metric_name
from recsys.models.mf import make_mf_model
from recsys.tracking import configure_tracking, log_bundle, register_bundle, start_run

DEFAULT_CONFIG = "configs/train/mf_small.yaml"


# --- configuration ---------------------------------------------------------------------------
class DataSection(StrictModel):
    """Where the data comes from and how a missing validation set is carved out of train."""

    source: str = "data/small"
    valid_frac: float = Field(0.1, gt=0.0, lt=1.0)
    valid_seed: int = 0


class ALSParams(StrictModel):
    """``recsys.models.mf.ALSRecommender`` hyper-parameters (defaults are implicit's)."""

    factors: int = Field(100, ge=1)
    regularization: float = Field(0.01, ge=0.0)
    alpha: float = Field(1.0, ge=0.0)
    iterations: int = Field(15, ge=1)
    use_cg: bool = True
    num_threads: int = Field(0, ge=0)
    random_state: int = 0


class BPRParams(StrictModel):
    """``recsys.models.mf.BPRRecommender`` hyper-parameters (defaults are implicit's)."""

    factors: int = Field(100, ge=1)
    learning_rate: float = Field(0.01, gt=0.0)
    regularization: float = Field(0.01, ge=0.0)
    iterations: int = Field(100, ge=1)
    verify_negative_samples: bool = True
    num_threads: int = Field(0, ge=0)
    random_state: int = 0
    fold_in_alpha: float = Field(20.0, ge=0.0)
    fold_in_regularization: float = Field(1.0, gt=0.0)


class ModelSection(StrictModel):
    """``kind`` picks the model; each kind keeps its own hyper-parameters, so ``--set model.kind=bpr``
    switches without editing the file."""

    kind: Literal["als", "bpr"] = "als"
    als: ALSParams = Field(default_factory=ALSParams)
    bpr: BPRParams = Field(default_factory=BPRParams)

    @property
    def params(self) -> ALSParams | BPRParams:
        return self.als if self.kind == "als" else self.bpr


class EvalSection(StrictModel):
    """Cut-offs, and the per-iteration validation curve (``every`` iterations, ``sample_users``)."""

    ks: list[int] = Field(default_factory=lambda: [20])
    every: int = Field(5, ge=1)
    sample_users: int = Field(2000, ge=1)


class SearchSection(StrictModel):
    """Hyper-parameter search space (model keys -> candidate values), used with ``--search``."""

    method: Literal["grid", "random"] = "random"
    n_trials: int = Field(8, ge=1)
    seed: int = 0
    space: dict[str, list[Any]] = Field(default_factory=dict)


class TrackingSection(StrictModel):
    experiment: str = "mf"
    run_name: str | None = None
    registered_model: str | None = "mf"
    alias: str | None = None


class TrainMFConfig(StrictModel):
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    search: SearchSection = Field(default_factory=SearchSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    out: str = "bundles/mf"

    @model_validator(mode="after")
    def _check_space(self) -> TrainMFConfig:
        params = self.model.params
        for key, values in self.search.space.items():
            if key not in type(params).model_fields:
                raise ValueError(f"search.space.{key}: not a {self.model.kind} hyper-parameter")
            if not values:
                raise ValueError(f"search.space.{key}: needs at least one value")
            for value in values:
                try:
                    with_value(params, {key: value})
                except ValidationError as exc:
                    raise ValueError(f"search.space.{key}: {value!r}: {exc.errors()[0]['msg']}") from None
        return self

    @property
    def primary_metric(self) -> str:
        return f"recall@{max(self.eval.ks)}"

    def logged_params(self, search: bool) -> dict[str, Any]:
        """What MLflow records: the active model's hyper-parameters only (and the space when searching)."""
        out = self.model_dump(mode="json", exclude={"model"} | (set() if search else {"search"}))
        return {"model": {"kind": self.model.kind, **self.model.params.model_dump(mode="json")}, **out}


def with_value(model: ALSParams | BPRParams, update: dict[str, Any]) -> ALSParams | BPRParams:
    """A validated copy of ``model`` with ``update`` applied."""
    return type(model).model_validate({**model.model_dump(), **update})


# --- data ------------------------------------------------------------------------------------
def holdout_validation(split: Split, frac: float, seed: int) -> Split:
    """Move ``round(frac * n)`` random training items of each user into a validation set.

    Deterministic for a given ``seed``. Test is unchanged; the new training set has no ``events``
    (they would include the held-out positives). Used for model selection only.
    """
    train = split.train
    ui = train.user_items.tocsr()
    ui.sort_indices()
    counts = np.diff(ui.indptr)
    rows = np.repeat(np.arange(ui.shape[0]), counts)
    keys = np.random.default_rng(seed).random(ui.nnz)
    order = np.lexsort((keys, rows))  # random order within each row
    position = np.empty(ui.nnz, dtype=np.int64)
    position[order] = np.arange(ui.nnz) - np.repeat(ui.indptr[:-1], counts)
    n_hold = np.rint(frac * counts).astype(np.int64)
    hold = position < n_hold[rows]

    def part(mask: np.ndarray, source: sp.csr_matrix) -> sp.csr_matrix:
        src = source.tocsr()
        m = sp.csr_matrix((src.data[mask], (rows[mask], src.indices[mask])), shape=src.shape)
        m.sort_indices()
        return m

    new_train = dataclasses.replace(
        train,
        user_items=part(~hold, ui),
        timestamps=part(~hold, train.timestamps) if train.timestamps is not None else None,
        events=None,
    )
    return Split(
        train=new_train,
        test=split.test,
        valid=part(hold, ui),
        kind=f"{split.kind}+holdout",
        info={**split.info, "holdout_valid_frac": frac, "holdout_seed": seed},
    )


# --- one fit ---------------------------------------------------------------------------------
def fit_model(params: ALSParams | BPRParams, split: Split, cfg: TrainMFConfig, curve: bool) -> tuple[Any, float]:
    """Fit on ``split.train``; with ``curve``, log validation Recall@K on a user sample as steps."""
    model = make_mf_model(cfg.model.kind, **params.model_dump())
    k = max(cfg.eval.ks)
    metric = mlflow_metric_name(f"valid_sample/recall@{k}")

    def callback(iteration: int, m: Any) -> None:
        step = iteration + 1
        if step % cfg.eval.every == 0 or step == params.iterations:
            res = evaluate(m, split, on="valid", ks=(k,), max_users=cfg.eval.sample_users, slices=False)
            mlflow.log_metric(metric, res.metrics[f"recall@{k}"], step=step)

    start = time.perf_counter()
    model.fit(split.train, callback=callback if curve and split.valid is not None else None)
    return model, time.perf_counter() - start


def log_result(result: EvalResult, prefix: str) -> None:
    mlflow.log_metrics(result.mlflow_metrics(prefix))


def search_points(cfg: TrainMFConfig) -> list[dict[str, Any]]:
    """Grid (every combination) or ``n_trials`` distinct random combinations of ``search.space``."""
    keys = list(cfg.search.space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(cfg.search.space[k] for k in keys))]
    if cfg.search.method == "random" and len(grid) > cfg.search.n_trials:
        rng = np.random.default_rng(cfg.search.seed)
        grid = [grid[i] for i in sorted(rng.choice(len(grid), size=cfg.search.n_trials, replace=False))]
    return grid


# --- the run ---------------------------------------------------------------------------------
def run(cfg: TrainMFConfig, config_path: str | None, search: bool) -> dict[str, Any]:
    """Everything after argument parsing; returns a summary (used by tests and the printout)."""
    split = load_split(cfg.data.source)
    carved = split.valid is None
    selection = holdout_validation(split, cfg.data.valid_frac, cfg.data.valid_seed) if carved else split
    dataset_name = split.train.name
    ks = tuple(cfg.eval.ks)
    primary = cfg.primary_metric
    kind = cfg.model.kind
    run_name = cfg.tracking.run_name or f"{kind}-{dataset_name}{'-search' if search else ''}"

    with start_run(
        cfg.tracking.experiment,
        run_name,
        params=cfg.logged_params(search),
        tags={"model": kind, "dataset": dataset_name, "split.kind": selection.kind},
        dataset_fingerprint=split.train.fingerprint(),
        split_hash=split.hash(),
    ) as parent:
        if config_path is not None:
            mlflow.log_artifact(config_path, artifact_path="config")
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/resolved.yaml")

        # 1. selection: one fit, or one nested run per search point, judged on validation only
        params = cfg.model.params
        trials: list[dict[str, Any]] = []
        if search:
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
                    model, seconds = fit_model(trial_params, selection, cfg, curve=True)
                    res = evaluate(model, selection, on="valid", ks=ks, slices=False)
                    log_result(res, "valid")
                    mlflow.log_metric("fit_seconds", seconds)
                score = res.metrics[primary]
                trials.append({"point": point, "valid": score, "run_id": child.info.run_id})
                if score > best_score:  # ties keep the earlier trial
                    best_score, params, selection_model, selection_seconds = score, trial_params, model, seconds
            mlflow.log_params({f"best.{k}": v for k, v in params.model_dump().items()})
            mlflow.log_metric(mlflow_metric_name(f"search/best_valid/{primary}"), best_score)
        else:
            selection_model, selection_seconds = fit_model(params, selection, cfg, curve=True)
        valid_result = evaluate(selection_model, selection, on="valid", ks=ks)
        log_result(valid_result, "valid")

        # 2. final model: refit with the chosen hyper-parameters on everything before the test
        #    window (train + the carved or temporal validation positives), as production would
        #    before serving; evaluation on test still masks train and validation items.
        if carved:
            final, fit_seconds = fit_model(params, split, cfg, curve=False)
        else:
            refit = dataclasses.replace(split, train=split.train_with_valid(), valid=None)
            final, fit_seconds = fit_model(params, refit, cfg, curve=False)
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
    args = parser.parse_args(argv)

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
    configure_tracking(args.tracking_uri)
    try:
        summary = run(cfg, args.config, args.search)
    except (DataError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary_markdown(summary, cfg.eval.ks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
