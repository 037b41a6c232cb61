"""Offline comparison of trained models and baselines on one dataset's test set.

Launch::

    python -m training.evaluate --dataset gowalla --models mf@champion,popular,random
    python -m training.evaluate --dataset data/small --models mf@champion,gnn@champion,popular,random \
        --k 20 --out reports/

Models are registry references (``name@alias``, ``name/<version>``), bundle directories, or the
baselines ``popular`` / ``random`` (fit on the fly on the training set). Every model is scored with
full ranking on the same users (those with test positives), seen items excluded
(:func:`recsys.evaluation.evaluate`).

For a ``data_gen`` dataset (a folder with ``truth/``) an ``oracle`` row is added: for each evaluated
user, the items with the highest *true* click probability (``data_gen.truth.ClickModel.oracle_topk``),
excluding the user's train and validation items. Its metrics are the ceiling the logged data allows;
``oracle fraction`` is each model's Recall@K over the oracle's.

Writes ``<out>/offline_<dataset>.md`` (the tables, slices all/cold/heavy, provenance) and
``<out>/offline_<dataset>.png`` (Recall@K and NDCG@K per model per slice), and prints the Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bundle import BundleError, read_manifest
from recsys.data import DataError, Split, load_split
from recsys.evaluation import EvalResult, evaluate, format_table
from recsys.models.base import Recommender
from recsys.models.popular import PopularRecommender
from recsys.models.random_model import RandomRecommender
from recsys.provenance import git_commit, machine_description
from recsys.tracking import ModelRefError, configure_tracking, resolve_model_ref

BASELINES = {"popular": lambda: PopularRecommender(), "random": lambda: RandomRecommender(seed=0)}
SLICES = ("all", "cold", "heavy")


class EvaluationError(RuntimeError):
    """A model cannot be evaluated on this dataset (wrong data, unknown reference)."""


def load_model(ref: str, split: Split, download_dir: Path) -> tuple[Recommender, str]:
    """A fitted model for ``ref`` and a one-line description of where it came from."""
    if ref in BASELINES:
        # Same protocol as the trained models: fit on everything before the test window.
        known = split.train_with_valid()
        return BASELINES[ref]().fit(known), f"baseline fit on train + validation ({known.n_interactions:,} positives)"
    path = resolve_model_ref(ref, dst_dir=download_dir / f"model{len(list(download_dir.iterdir()))}")
    manifest = read_manifest(path)
    model = Recommender.load(path)
    train = split.train
    for what, mine, theirs in (("users", model.users, train.users), ("items", model.items, train.items)):
        if len(mine) != len(theirs) or not np.array_equal(mine.ids, theirs.ids):
            raise EvaluationError(
                f"{ref}: the model's {what} ({len(mine):,}) differ from the dataset's ({len(theirs):,}); "
                "it was trained on other data"
            )
    source = ref if Path(ref).exists() else "registry"
    note = (
        f"{model.kind} bundle ({source}), version {manifest.get('version')}, commit "
        f"`{str(manifest.get('git_commit'))[:12]}`, config {manifest.get('config')}"
    )
    if model.data_fingerprint != train.fingerprint() and model.data_fingerprint != split.train_with_valid().fingerprint():
        note += " (WARNING: trained on data with another fingerprint than this training set)"
        print(f"warning: {ref} was trained on data with another fingerprint than {train.name}'s training set",
              file=sys.stderr)  # fmt: skip
    return model, note


def oracle_rank_lists(data_dir: Path, split: Split, users: np.ndarray, k: int) -> np.ndarray:
    """``[n_users, k]`` dense item indices of the true best items of ``users`` (``-1`` elsewhere)."""
    from data_gen.truth import ClickModel  # training/ may read truth/; recsys/ may not

    click_model = ClickModel.load(data_dir)
    seen = split.train.user_items.tocsr()
    if split.valid is not None:
        seen = (seen + split.valid).tocsr()
    item_ids = split.train.items.ids
    exclude = [item_ids[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] for u in users]
    external = click_model.oracle_topk(split.train.users.ids[users], k, exclude=exclude)
    lists = np.full((split.train.n_users, k), -1, dtype=np.int64)
    lists[users] = split.train.items.indices(external.ravel(), missing=-1).reshape(external.shape)
    return lists


def bar_chart(rows: dict[str, EvalResult], k: int, path: Path, title: str) -> None:
    """Recall@k and NDCG@k per model, grouped by slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(SLICES))
    for ax, metric in zip(axes, (f"recall@{k}", f"ndcg@{k}")):
        for i, (name, res) in enumerate(rows.items()):
            values = [res.slices.get(s, {}).get(metric, np.nan) for s in SLICES]
            ax.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(x, [f"{s} ({int(rows[next(iter(rows))].slices.get(s, {}).get('n_users', 0))})" for s in SLICES])
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(dataset: str, refs: list[str], k: int, out_dir: Path, max_users: int | None = None) -> dict[str, Any]:
    split = load_split(dataset)
    name = "gowalla" if dataset == "gowalla" else Path(dataset).resolve().name
    rows: dict[str, EvalResult] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="feedrec-eval-") as downloads:  # models live in memory
        for ref in refs:
            model, notes[ref] = load_model(ref, split, Path(downloads))
            rows[ref] = evaluate(model, split, on="test", ks=(k,), max_users=max_users)
            print(f"{ref}: recall@{k} {rows[ref].metrics[f'recall@{k}']:.4f}", file=sys.stderr)
    data_dir = Path(dataset)
    if dataset != "gowalla" and (data_dir / "truth").is_dir():
        users = next(iter(rows.values())).users
        lists = oracle_rank_lists(data_dir, split, users, k)
        rows["oracle"] = evaluate(None, split, on="test", ks=(k,), users=users, rank_lists=lists)
        notes["oracle"] = "true click model (data_gen truth/), train and validation items excluded"

    out_dir.mkdir(parents=True, exist_ok=True)
    report, chart = out_dir / f"offline_{name}.md", out_dir / f"offline_{name}.png"
    bar_chart(rows, k, chart, f"{name}: test, K={k}")
    other = [f"hit_rate@{k}", f"precision@{k}", f"mrr@{k}", f"coverage@{k}", f"pop_bias@{k}"]
    lines = [
        f"# Offline evaluation: {name}",
        "",
        f"- split: {split.kind}, hash `{split.hash()[:16]}`; {split.train.n_users:,} users, "
        f"{split.train.n_items:,} items, {split.train.n_interactions:,} training positives",
        "- protocol: full ranking over all items, the user's training (and validation) items excluded; "
        "users with test positives" + (f" (random sample of {max_users:,})" if max_users else ""),
        f"- slices: cold = at most {next(iter(rows.values())).info.get('cold_max_train')} training positives, "
        f"heavy = at least {next(iter(rows.values())).info.get('heavy_min_train'):.0f}",
        f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{git_commit()}`, {machine_description()}",
        "",
        "## Ranking quality",
        "",
        format_table(rows, metrics=(f"recall@{k}", f"ndcg@{k}"), slices=("cold", "heavy")),
        "",
        "## Other metrics (all users)",
        "",
        format_table(rows, metrics=other, slices=(), oracle=""),  # oracle fraction: Recall only
        "",
        f"![Recall@{k} and NDCG@{k} per slice]({chart.name})",
        "",
        "## Models",
        "",
        *[f"- `{ref}`: {note}" for ref, note in notes.items()],
        "",
    ]
    text = "\n".join(lines)
    report.write_text(text)
    return {"rows": rows, "report": report, "chart": chart, "markdown": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--dataset", required=True, help="'gowalla', a data_gen folder or a LightGCN folder")
    parser.add_argument(
        "--models", required=True,
        help="comma-separated: name@alias, name/<version>, bundle paths, popular, random",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=20, help="cut-off K (default: %(default)s)")
    parser.add_argument("--out", default="reports", help="report directory (default: %(default)s)")
    parser.add_argument("--max-users", type=int, help="evaluate a fixed random sample of users (quick runs)")
    parser.add_argument("--tracking-uri", help="MLflow store when MLFLOW_TRACKING_URI is unset")
    args = parser.parse_args(argv)
    refs = [r.strip() for r in args.models.split(",") if r.strip()]
    if not refs:
        parser.error("--models is empty")
    if args.k < 1:
        parser.error("--k must be >= 1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise
    configure_tracking(args.tracking_uri)
    try:
        result = run(args.dataset, refs, args.k, Path(args.out), args.max_users)
    except (DataError, BundleError, ModelRefError, EvaluationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result["markdown"])
    print(f"wrote {result['report']} and {result['chart']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
