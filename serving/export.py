"""Export a trained model bundle to a *serving bundle*: ONNX encoders + item matrix + id maps.

Usage::

    python -m serving.export --model gnn@champion --out bundles/gnn-serving
    python -m serving.export --model bundles/mf --out bundles/mf-serving --parity-users 2000

The serving bundle is the training bundle (weights, id maps: the service rebuilds the PyTorch model
from them for its load-time parity check) plus:

- ``user_encoder.onnx``: ``user_idx[batch] -> user_vec[batch, dim]``, a Gather from the table of
  known users' vectors (for the GNN that is the propagated output, computed once here);
- ``fold_in.onnx`` (models that support it): ``item_idx[batch, L], item_mask[batch, L],
  followee_idx[batch, F], followee_mask[batch, F] -> user_vec[batch, dim]``, the model's inductive
  fold-in of an unknown user from neighbour embeddings (padded indices + 0/1 mask);
- ``serving.safetensors``: ``item_matrix[n_items, dim]`` (scores are ``user_vec @ item_matrix.T``; the
  C++ top-k runs outside ONNX), the seen-items CSR and the popularity order used as fallback;
- ``manifest.json``: the training manifest plus a ``serving`` section (dim, graphs, fold-in method,
  parity report) and sha256 of every file (``recsys.bundle.write_manifest``).

Parity is checked before the bundle is written: ONNX Runtime vs PyTorch on sampled known users and on
folded-in users (profiles built from known users' items and random followees) must give the same
top-20 (up to near-ties: scores within a relative 1e-5 may swap) for >= 99.9% of users and scores
within 1e-4; the export fails otherwise.

Where a model's fold-in comes from (in order): a ``fold_in_module()`` method on the model returning
an ``nn.Module`` with the signature above, or a builder registered in :data:`FOLD_IN_BUILDERS` by
kind. Models with neither (``random``: its fold-in hashes the item set) are exported without
``fold_in.onnx``; the service then answers unknown users with popular items.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.bundle import MANIFEST, BundleError, read_manifest, verify_bundle, write_manifest
from serving.fold_in import als_fold_in, bpr_fold_in
from serving.refs import resolve_ref

log = logging.getLogger("serving.export")

USER_ENCODER = "user_encoder.onnx"
FOLD_IN = "fold_in.onnx"
SERVING_TENSORS = "serving.safetensors"
OPSET = 17
#: Number of most popular items kept for the fallback list (k <= 100 plus room for exclusions).
POPULAR_KEEP = 2000


class KnownUserEncoder(nn.Module):
    """Gather rows of the table of known users' vectors."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.detach().float().contiguous())

    def forward(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.table[user_idx]


class ConstantFoldIn(nn.Module):
    """Fold-in of models whose user vector does not depend on the user (popularity)."""

    def __init__(self, vector: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("vector", vector.detach().float().reshape(1, -1))

    def forward(self, item_idx, item_mask, followee_idx, followee_mask) -> torch.Tensor:
        # Multiply by a batch-shaped ones tensor so the output has the dynamic batch dimension.
        ones = torch.ones_like(item_mask[:, :1])
        return ones * self.vector


FoldInBuilder = Callable[[Any], tuple[nn.Module, str]]
#: kind -> builder of the ONNX-exportable fold-in module and a one-line description of the method.
FOLD_IN_BUILDERS: dict[str, FoldInBuilder] = {
    "popular": lambda model: (ConstantFoldIn(model.fold_in([])), "constant vector [1]"),
    "als": als_fold_in,
    "bpr": bpr_fold_in,
}


def fold_in_module(model) -> tuple[nn.Module, str] | None:
    """The exportable fold-in of ``model`` and its description, or ``None`` when it has none."""
    hook = getattr(model, "fold_in_module", None)
    if callable(hook):
        module = hook()
        return module, getattr(module, "method", type(module).__name__)
    builder = FOLD_IN_BUILDERS.get(model.kind)
    return builder(model) if builder is not None else None


@dataclass
class ParityReport:
    """ONNX vs PyTorch on the same users (top-k lists and scores)."""

    users: int
    same_topk: float
    max_abs_score_diff: float
    k: int

    def ok(self, min_same: float = 0.999, tol: float = 1e-4) -> bool:
        return self.users == 0 or (self.same_topk >= min_same and self.max_abs_score_diff <= tol)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], dynamic: dict) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=["user_vec"],
            dynamic_axes={**dynamic, "user_vec": {0: "batch"}}, opset_version=OPSET, dynamo=False,
            custom_opsets={"com.microsoft": 1} if getattr(module, "uses_contrib_ops", False) else None,
        )


def export_encoders(model, out_dir: Path) -> dict[str, Any]:
    """Write ``user_encoder.onnx`` (and ``fold_in.onnx`` when supported); return manifest fields."""
    with torch.no_grad():
        table = model.user_vectors(np.arange(model.n_users)).float()
    _export(KnownUserEncoder(table), (torch.zeros(2, dtype=torch.int64),), out_dir / USER_ENCODER,
            ["user_idx"], {"user_idx": {0: "batch"}})
    info: dict[str, Any] = {"dim": int(table.shape[1]), "user_encoder": USER_ENCODER, "fold_in": None,
                            "fold_in_method": None}
    built = fold_in_module(model)
    if built is not None:
        module, method = built
        example = (
            torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3), torch.zeros(2, 2, dtype=torch.int64),
            torch.ones(2, 2),
        )
        dyn = {
            "item_idx": {0: "batch", 1: "n_items"}, "item_mask": {0: "batch", 1: "n_items"},
            "followee_idx": {0: "batch", 1: "n_followees"}, "followee_mask": {0: "batch", 1: "n_followees"},
        }
        _export(module, example, out_dir / FOLD_IN, list(dyn), dyn)
        info.update(fold_in=FOLD_IN, fold_in_method=method)
    return info


def serving_tensors(model) -> dict[str, torch.Tensor]:
    """Item matrix, seen CSR and popularity order (from the seen matrix) for the service."""
    seen = model.seen.tocsr()
    counts = np.bincount(seen.indices, minlength=model.n_items).astype(np.float64)
    order = np.argsort(-counts, kind="stable")[:POPULAR_KEEP]
    with torch.no_grad():
        items = model.item_vectors().float().contiguous()
    return {
        "item_matrix": items,
        "seen_indptr": torch.from_numpy(seen.indptr.astype(np.int64)),
        "seen_indices": torch.from_numpy(seen.indices.astype(np.int64)),
        "popular_items": torch.from_numpy(order.astype(np.int64)),
        "popular_scores": torch.from_numpy(np.log1p(counts[order]).astype(np.float32)),
    }


#: Relative score gap under which two items count as tied in the parity check.
TIE_TOL = 1e-5


def _dense_topk(vectors: np.ndarray, items: torch.Tensor, k: int, exclude: list[np.ndarray]):
    scores = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)) @ items.T
    for row, ex in enumerate(exclude):
        scores[row, torch.from_numpy(np.asarray(ex, dtype=np.int64))] = -torch.inf
    k = min(k, scores.shape[1])
    sc, idx = torch.topk(scores, k, dim=1)
    return idx.numpy(), sc.numpy(), scores


def compare(reference: np.ndarray, candidate: np.ndarray, items: torch.Tensor, exclude: list[np.ndarray],
            k: int = 20) -> ParityReport:
    """Top-``k`` agreement and largest score difference of two sets of user vectors.

    A user's lists agree when they are equal, or when they differ only by near-ties: at every position
    the candidate's item has the reference's score of that position within ``TIE_TOL`` (relative).
    Two items a model scores 1e-7 apart swap under any float rounding (implicit's own Cholesky vs the
    exported solver); counting that as a mismatch failed the export of a healthy ALS model.
    """
    if len(reference) == 0:
        return ParityReport(0, 1.0, 0.0, k)
    ref_idx, _, ref_scores = _dense_topk(reference, items, k, exclude)
    cand_idx, _, cand_scores = _dense_topk(candidate, items, k, exclude)
    finite = torch.isfinite(ref_scores) & torch.isfinite(cand_scores)
    diff = float((ref_scores - cand_scores).abs()[finite].max()) if bool(finite.any()) else 0.0
    ref_top = torch.gather(ref_scores, 1, torch.from_numpy(ref_idx))
    ref_of_cand = torch.gather(ref_scores, 1, torch.from_numpy(cand_idx))
    ties = ((ref_of_cand - ref_top).abs() <= TIE_TOL * (1.0 + ref_top.abs())).all(dim=1).numpy()
    same = float(np.mean(np.all(ref_idx == cand_idx, axis=1) | ties))
    return ParityReport(len(reference), same, diff, k)


def sample_profiles(model, n: int, max_recent: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Fold-in inputs for ``n`` pretend-new users: a known user's items and random followees."""
    rng = np.random.default_rng(seed)
    seen = model.seen.tocsr()
    users = rng.choice(model.n_users, size=min(n, model.n_users), replace=False)
    recents, follows = [], []
    for u in users:
        items = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        if len(items) == 0:
            items = rng.choice(model.n_items, size=min(3, model.n_items), replace=False)
        recents.append(rng.permutation(items)[:max_recent].tolist())
        n_follow = int(rng.integers(0, 8))
        follows.append(rng.choice(model.n_users, size=min(n_follow, model.n_users), replace=False).tolist())
    return recents, follows


def check_parity(model, encoder, n_users: int, *, max_recent: int = 50, k: int = 20, seed: int = 0
                 ) -> dict[str, ParityReport]:
    """ONNX (``encoder``) vs the PyTorch model on ``n_users`` known and ``n_users`` folded-in users."""
    from serving.backends import TorchEncoder, pad_batch

    torch_encoder = TorchEncoder(model)
    items = model.item_vectors().float()
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(model.n_users, size=min(n_users, model.n_users), replace=False))
    seen = model.seen.tocsr()
    exclude = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in users]
    reports = {"known": compare(torch_encoder.encode_known(users), encoder.encode_known(users), items, exclude, k)}
    if getattr(encoder, "has_fold_in", False) and n_users > 0:
        recents, follows = sample_profiles(model, n_users, max_recent, seed)
        item_idx, item_mask = pad_batch(recents)
        fol_idx, fol_mask = pad_batch(follows)
        ref = torch_encoder.encode_new(item_idx, item_mask, fol_idx, fol_mask)
        got = encoder.encode_new(item_idx, item_mask, fol_idx, fol_mask)
        reports["fold_in"] = compare(ref, got, items, [np.asarray(r) for r in recents], k)
    return reports


def export_bundle(src: str | Path, out: str | Path, *, parity_users: int = 1000, max_recent: int = 50,
                  seed: int = 0) -> Path:
    """Export the training bundle at ``src`` to the serving bundle ``out`` (atomic replace)."""
    from recsys.models.base import Recommender
    from serving.backends import OnnxEncoder

    src, out = Path(src), Path(out)
    manifest = verify_bundle(src)
    model = Recommender.load(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in manifest["files"]:
            if name in (USER_ENCODER, FOLD_IN, SERVING_TENSORS):
                continue
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, tmp / name)
        info = export_encoders(model, tmp)
        from safetensors.torch import save_file

        save_file(serving_tensors(model), str(tmp / SERVING_TENSORS))
        encoder = OnnxEncoder(tmp / USER_ENCODER, tmp / FOLD_IN if info["fold_in"] else None,
                              ["CPUExecutionProvider"], threads=0)
        reports = check_parity(model, encoder, parity_users, max_recent=max_recent, seed=seed)
        for name, report in reports.items():
            if not report.ok():
                raise BundleError(f"ONNX/PyTorch parity failed for {name} users: {report}")
        info.update(parity={name: asdict(r) for name, r in reports.items()}, max_recent=max_recent,
                    source=str(src))
        fields = {k: v for k, v in manifest.items() if k != "files"}
        write_manifest(tmp, {**fields, "serving": info})
        verify_bundle(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_serving_bundle(path: Path) -> bool:
    return (path / MANIFEST).is_file() and "serving" in read_manifest(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle directory or registry reference (gnn@champion)")
    parser.add_argument("--out", required=True, type=Path, help="serving bundle directory to write")
    parser.add_argument("--parity-users", type=int, default=1000, help="users in the parity check (default 1000)")
    parser.add_argument("--max-recent", type=int, default=50, help="recent items used in fold-in (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        src = resolve_ref(args.model)
        out = export_bundle(src, args.out, parity_users=args.parity_users, max_recent=args.max_recent,
                            seed=args.seed)
    except (BundleError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    serving = read_manifest(out)["serving"]
    print(f"wrote {out} (dim {serving['dim']}, fold-in: {serving['fold_in_method'] or 'none'})")
    print("parity: " + json.dumps(serving["parity"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
