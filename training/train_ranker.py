"""Train the feed's click ranker on logged impressions, point-in-time, and register ``ranker@champion``.

Launch::

    python -m training.train_ranker --config configs/train/ranker_small.yaml --alias champion
    python -m training.train_ranker --config configs/train/ranker_small.yaml --ablation
    python -m training.train_ranker --set data.source=data/small_s11 --out bundles/feed_small_s11

What one run does, top to bottom (days counted back from the end of the log):

1. Windows: ``[.. gnn_end)`` trains the feature GNN; ``[gnn_end, valid_start)`` are the ranker's
   training impressions; ``[valid_start, test_start)`` picks the epoch (early stopping on log loss);
   ``[test_start, end)`` is only reported (AUC, log loss). Nothing is tuned on the test days.
2. The feature GNN (:class:`recsys.models.gnn.GNNRecommender`, ``gnn.*``) is trained on the events
   before ``gnn_end`` only: a GNN that saw the ranker's window would score the pairs the user clicked
   there highly *because* they were clicked, and the ranker would learn to trust a leak it never has
   at serving time. Serving uses this same GNN (stale by the ranker's window; new posts get content
   fold-in vectors), so training and serving scores come from one model. With ``gnn.select`` several
   feature GNNs are trained and the one whose ranker has the lowest validation log loss is kept.
3. Replay (:func:`recsys.feed.replay.replay_impressions`): every impression from ``gnn_end`` on gets
   the features of the state fed the events before its replay step (one hour by default).
4. The ranker (:mod:`recsys.feed.ranker`, ``ranker.*``), trained on the ranker window with early
   stopping on the validation days; the test days' AUC and log loss are this model's. With ``refit``
   (default) the served model is then trained afresh on every replayed day (train + valid + test, the
   freshest included) for the selected number of epochs. ``--ablation`` also trains the
   ``position_bias`` variants ``none`` and ``ipw`` on the same examples and writes their bundles
   next to the main one (``<out>-position-none``, ``<out>-position-ipw``) for the policy benchmark.
5. Bundle (:mod:`recsys.feed.bundle`: weights, ONNX graph parity-checked by ONNX Runtime, feed
   config), logged to MLflow with params, metrics and the data fingerprint, registered as a new
   version of ``tracking.registered_model`` (``ranker``), ``--alias`` moved to it.

Only public tables are read; ``truth/`` is never opened (tests/recsys/feed/test_no_truth.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from feedrec_common.config import ConfigError, StrictModel, add_config_arguments, load_config
from recsys.bundle import BundleError
from recsys.data import DataError
from recsys.feed.bundle import load_feed_bundle, save_feed_bundle
from recsys.feed.cutoff import dataset_before
from recsys.feed.data import DAY, load_feed_data
from recsys.feed.embeddings import FeedEmbeddings
from recsys.feed.features import EMBEDDING_COLUMNS, embedding_features
from recsys.feed.pipeline import FeedConfig
from recsys.feed.ranker import RankerConfig, fit_ranker, log_loss, predict_logits, roc_auc
from recsys.feed.replay import replay_impressions
from recsys.models.gnn import GNNConfig, GNNRecommender
from training.protocol import TrackingConfig

DEFAULT_CONFIG = "configs/train/ranker_small.yaml"


class DataSection(StrictModel):
    """Dataset and time windows (days counted back from the end of the log)."""

    source: str = "data/small"
    ranker_days: float = Field(9.0, gt=0)
    valid_days: float = Field(2.0, gt=0)
    test_days: float = Field(2.0, gt=0)
    replay_step_seconds: int = Field(3600, gt=0)


class GNNSection(StrictModel):
    """The feature GNN, trained on the events before the ranker's window.

    ``select`` lists alternatives (partial sections merged over this one, e.g. ``{epochs: 4, model:
    {edge_half_life_days: null}}``); with any, each is trained and the one whose ranker has the lowest
    validation log loss is kept (the GNN columns depend on the vectors only, so the log is replayed
    once). A GNN tuned for next-post recall leans on recency and popularity, which the ranker already
    has as features; what the ranker needs from it is taste, and its validation loss is the judge.
    """

    model: GNNConfig = Field(default_factory=GNNConfig)
    epochs: int = Field(2, gt=0)
    batch_size: int = Field(4096, gt=0)
    lr: float = Field(1e-2, gt=0)
    seed: int = 0
    select: list[dict] = Field(default_factory=list)

    def candidates(self) -> list[GNNSection]:
        """This section first, then each ``select`` entry merged over it (validated)."""
        base = self.model_dump(exclude={"select"})
        out = [self.model_copy(update={"select": []})]
        for entry in self.select:
            merged = {**base, **{k: v for k, v in entry.items() if k != "model"}}
            merged["model"] = {**base["model"], **entry.get("model", {})}
            out.append(GNNSection.model_validate(merged))
        return out


class TrackingSection(TrackingConfig):
    experiment: str = "feed-ranker"
    registered_model: str | None = "ranker"


class TrainRankerConfig(StrictModel):
    """Everything one run needs (``configs/train/ranker_small.yaml``)."""

    data: DataSection = Field(default_factory=DataSection)
    gnn: GNNSection = Field(default_factory=GNNSection)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    threads: int = Field(2, gt=0)
    out: str = "bundles/feed_small"
    # Refit the served ranker on every replayed day (train + valid + test) for the selected epochs;
    # the held-out figures are the selection model's (the GNN trainer's select-then-refit protocol).
    refit: bool = True


def run(cfg: TrainRankerConfig, config_path: str | None, ablation: bool = False, mlflow_on: bool = True) -> dict:
    """One training run (module docstring); returns the metrics and paths."""
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    data = load_feed_data(cfg.data.source)
    d = cfg.data
    test_start = int(data.end_ts - d.test_days * DAY)
    valid_start = int(test_start - d.valid_days * DAY)
    gnn_end = int(valid_start - d.ranker_days * DAY)
    if gnn_end <= data.start_ts:
        raise DataError(
            f"{cfg.data.source}: {d.ranker_days + d.valid_days + d.test_days} days of windows leave no "
            f"history for the feature GNN (the log spans {(data.end_ts - data.start_ts) / DAY:.1f} days)"
        )
    timings: dict[str, float] = {}

    t = time.perf_counter()
    history = dataset_before(data.dataset, gnn_end)
    candidates = cfg.gnn.candidates()
    embeddings = _feature_embeddings(candidates[0], history, data)
    timings["gnn_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    imps, _ = replay_impressions(data, embeddings, gnn_end, data.end_ts, step=d.replay_step_seconds, progress=True)
    timings["replay_seconds"] = time.perf_counter() - t
    train, valid, test = imps.ts < valid_start, (imps.ts >= valid_start) & (imps.ts < test_start), imps.ts >= test_start
    if not (train.any() and valid.any() and test.any()):
        raise DataError(f"{cfg.data.source}: a window has no impressions (train/valid/test must all have some)")
    selection: dict[str, float] = {}
    fitted = None  # the main ranker's fit on the kept GNN's features, when the selection made it
    if len(candidates) > 1:
        t = time.perf_counter()
        embeddings, chosen, losses, fitted = _select_feature_gnn(
            candidates, embeddings, history, data, imps, train, valid, cfg.ranker
        )
        timings["gnn_select_seconds"] = time.perf_counter() - t
        selection = {"feature_gnn_choice": float(chosen), **{f"feature_gnn_{j}_valid_logloss": v for j, v in enumerate(losses)}}

    variants = {"": cfg.ranker}
    if ablation:
        for mode in ("none", "ipw"):
            variants[f"-position-{mode}"] = cfg.ranker.model_copy(update={"position_bias": mode})
    results = {}
    for suffix, rcfg in variants.items():
        if suffix == "" and fitted is not None:
            model, info = fitted
        else:
            model, info = fit_ranker(
                rcfg, imps.features[train], imps.clicked[train], imps.features[valid], imps.clicked[valid], log=True
            )
        z = predict_logits(model, imps.features[test])
        refit_seconds = 0.0
        if cfg.refit:  # the served model: every replayed day, the freshest included, same epochs
            model, refit_info = fit_ranker(
                rcfg.model_copy(update={"epochs": info["best_epoch"] + 1}), imps.features, imps.clicked, log=True
            )
            refit_seconds = refit_info["train_seconds"]
        metrics = {
            "test_auc": roc_auc(imps.clicked[test], z),
            "test_logloss": log_loss(imps.clicked[test], z),
            "valid_logloss": info["valid_logloss"],
            "best_epoch": info["best_epoch"],
            "ranker_fit_seconds": info["train_seconds"] + refit_seconds,
            "refit": float(cfg.refit), "n_refit": int(len(imps.clicked)) if cfg.refit else 0,
            "n_train": int(train.sum()), "n_valid": int(valid.sum()), "n_test": int(test.sum()),
            "test_click_rate": float(imps.clicked[test].mean()),
            **timings, **selection,
        }  # fmt: skip
        rng = np.random.default_rng(0)
        probe = imps.features[rng.choice(np.flatnonzero(test), size=min(256, int(test.sum())), replace=False)]
        out = Path(cfg.out + suffix)
        save_feed_bundle(
            out, ranker=model, embeddings=embeddings, users=data.users, items=data.items, probe=probe,
            feed_config=cfg.feed.model_dump(), metrics=metrics,
            extra={
                "data_fingerprint": data.dataset.fingerprint(), "source": cfg.data.source,
                "windows": {"gnn_end": gnn_end, "valid_start": valid_start, "test_start": test_start},
            },
        )  # fmt: skip
        load_feed_bundle(out)  # refuses a bundle whose ONNX graph fails parity
        results[suffix or "main"] = {"bundle": str(out), **metrics}
    total = time.perf_counter() - t_start
    results["main"]["total_seconds"] = total
    if mlflow_on:
        _track(cfg, config_path, data.dataset.fingerprint(), results)
    return results


def _feature_embeddings(section: GNNSection, history, data) -> FeedEmbeddings:
    gnn = GNNRecommender(section.model).fit(
        history, epochs=section.epochs, batch_size=section.batch_size, lr=section.lr, seed=section.seed
    )
    return FeedEmbeddings.from_model(gnn, data.users, data.items, data.catalog)


def _select_feature_gnn(candidates, first, history, data, imps, train, valid, ranker_cfg):
    """The candidate whose ranker has the lowest validation log loss; ``imps.features`` ends holding its
    GNN columns. Returns ``(embeddings, index, validation log losses, (ranker, info) of the kept one)``."""
    best: tuple[float, int, FeedEmbeddings, np.ndarray, tuple] | None = None
    losses = []
    for j, section in enumerate(candidates):
        emb = first if j == 0 else _feature_embeddings(section, history, data)
        cols = embedding_features(emb, data.catalog, imps.user, imps.item)
        imps.features[:, EMBEDDING_COLUMNS] = cols
        fit = fit_ranker(ranker_cfg, imps.features[train], imps.clicked[train], imps.features[valid], imps.clicked[valid],
                         log=True)
        info = fit[1]
        losses.append(float(info["valid_logloss"]))
        print(f"feature GNN {j} ({section.epochs} epochs, edge half-life {section.model.edge_half_life_days}, "
              f"pair half-life {section.model.pair_half_life_days}): ranker valid log loss {losses[-1]:.5f}")
        if best is None or losses[-1] < best[0]:
            best = (losses[-1], j, emb, cols, fit)
    assert best is not None
    imps.features[:, EMBEDDING_COLUMNS] = best[3]
    print(f"feature GNN: candidate {best[1]} kept")
    return best[2], best[1], losses, best[4]


def _track(cfg: TrainRankerConfig, config_path: str | None, fingerprint: str, results: dict) -> None:
    import mlflow

    from recsys.tracking import log_bundle, register_bundle, start_run

    main = results["main"]
    with start_run(
        cfg.tracking.experiment, cfg.tracking.run_name or "ranker", params=cfg.model_dump(mode="json"), dataset_fingerprint=fingerprint
    ) as active:
        mlflow.log_metrics({k: float(v) for k, v in main.items() if isinstance(v, int | float)})
        for name, res in results.items():
            if name != "main":
                mlflow.log_metrics({f"ablation{name}.{k}": float(v) for k, v in res.items() if isinstance(v, int | float)})
        if config_path:
            mlflow.log_artifact(config_path)
        log_bundle(main["bundle"])
        if cfg.tracking.registered_model:
            version = register_bundle(active.info.run_id, cfg.tracking.registered_model, alias=cfg.tracking.alias)
            main["registered"] = f"{cfg.tracking.registered_model} v{version}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train_ranker", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_config_arguments(parser, default_config=DEFAULT_CONFIG)
    parser.add_argument("--ablation", action="store_true", help="also train the position_bias variants none and ipw")
    parser.add_argument("--alias", help="move this registry alias (e.g. champion) to the new version")
    parser.add_argument("--no-register", action="store_true", help="do not register a model version")
    parser.add_argument("--no-mlflow", action="store_true", help="no MLflow run (the bundle is still written)")
    parser.add_argument("--out", help="bundle directory (default: the config's out)")
    parser.add_argument("--tracking-uri", help="MLflow store when MLFLOW_TRACKING_URI is unset")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.alias:
        overrides.append(f"tracking.alias={args.alias}")
    if args.no_register:
        overrides.append("tracking.registered_model=null")
    if args.out:
        overrides.append(f"out={args.out}")
    try:
        cfg = load_config(TrainRankerConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_mlflow:
        from recsys.tracking import configure_tracking

        configure_tracking(args.tracking_uri)
    try:
        results = run(cfg, args.config, ablation=args.ablation, mlflow_on=not args.no_mlflow)
    except (DataError, BundleError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("| model | test AUC | test log loss | valid log loss | best epoch | bundle |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results.items():
        print(
            f"| ranker{'' if name == 'main' else name} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} | "
            f"{r['valid_logloss']:.4f} | {r['best_epoch']} | {r['bundle']} |"
        )
    main_r = results["main"]
    print(
        f"train {main_r['n_train']:,} / valid {main_r['n_valid']:,} / test {main_r['n_test']:,} impressions; "
        f"GNN {main_r['gnn_seconds']:.0f} s, replay {main_r['replay_seconds']:.0f} s, "
        f"ranker fit {main_r['ranker_fit_seconds']:.0f} s, "
        f"total {main_r['total_seconds']:.0f} s" + (f"; registered {main_r['registered']}" if "registered" in main_r else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
