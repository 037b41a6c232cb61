"""The feed's bundle (kind ``feed-ranker``): the ranker (weights + ONNX graph), the feature GNN's vectors
and the feed configuration, in the :mod:`recsys.bundle` layout (checksummed, no pickle).

Files: ``weights.safetensors`` (ranker parameters and buffers, ``emb.*`` vectors), ``ranker.onnx``,
``parity_probe.safetensors`` (feature rows and the torch logits they gave at export), user/item id maps,
``manifest.json`` (feature names, ranker and feed config, metrics). :func:`load_feed_bundle` verifies the
checksums, rebuilds the torch ranker, opens the ONNX graph in ONNX Runtime and refuses the bundle with
a :class:`~recsys.bundle.BundleError` when the two disagree on the probe rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recsys.bundle import BundleError, load_bundle, read_manifest, save_bundle, write_manifest
from recsys.data.dataset import IdMap
from recsys.feed.embeddings import FeedEmbeddings
from recsys.feed.features import FEATURE_NAMES, N_FEATURES
from recsys.feed.ranker import RankerConfig, RankerMLP, predict_logits

KIND = "feed-ranker"
ONNX_FILE = "ranker.onnx"
PROBE_FILE = "parity_probe.safetensors"
PARITY_ATOL = 1e-4
OPSET = 17


@dataclass
class FeedBundle:
    """A loaded, parity-checked feed bundle."""

    path: Path
    manifest: dict[str, Any]
    ranker: RankerMLP
    onnx: OnnxRanker
    embeddings: FeedEmbeddings
    users: IdMap
    items: IdMap

    @property
    def feed_config(self) -> dict[str, Any]:
        return self.manifest.get("feed_config", {})


class OnnxRanker:
    """The exported ranker in ONNX Runtime: ``features float32 [n, N_FEATURES] -> logits [n]``.

    Args:
        path (Path): ``ranker.onnx``.
        threads (int): Intra-op threads (one request is small; 1 keeps latency predictable). (default: 1)
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        return self.session.run(["logit"], {"features": x})[0].astype(np.float64)


def export_onnx(model: RankerMLP, path: str | Path) -> Path:
    """Write ``model`` as an ONNX graph with a dynamic batch axis."""
    model.eval()
    example = torch.zeros(4, N_FEATURES)
    torch.onnx.export(
        model, (example,), str(path), input_names=["features"], output_names=["logit"],
        dynamic_axes={"features": {0: "batch"}, "logit": {0: "batch"}}, opset_version=OPSET, dynamo=False,
    )  # fmt: skip
    return Path(path)


def save_feed_bundle(
    path: str | Path,
    *,
    ranker: RankerMLP,
    embeddings: FeedEmbeddings,
    users: IdMap,
    items: IdMap,
    probe: np.ndarray,
    feed_config: dict[str, Any],
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the bundle (module docstring); ``probe`` are feature rows for the parity check at load."""
    tensors = {f"ranker.{k}": v for k, v in ranker.state_dict().items()}
    tensors["emb.user"] = torch.from_numpy(embeddings.user_vectors)
    tensors["emb.item"] = torch.from_numpy(embeddings.item_vectors)
    tensors["emb.trained"] = torch.from_numpy(embeddings.trained_items.astype(np.uint8))
    tensors["emb.topic"] = torch.from_numpy(embeddings.topic_vectors)
    tensors["emb.creator"] = torch.from_numpy(embeddings.creator_vectors)
    path = save_bundle(
        path, kind=KIND, tensors=tensors, user_ids=users.ids, item_ids=items.ids,
        config={"ranker": ranker.config.model_dump()}, metrics=metrics,
        extra={"feature_names": list(FEATURE_NAMES), "feed_config": feed_config, **(extra or {})},
    )  # fmt: skip
    export_onnx(ranker, path / ONNX_FILE)
    probe_t = torch.from_numpy(np.ascontiguousarray(probe, dtype=np.float32))
    logits = torch.from_numpy(predict_logits(ranker, probe_t).astype(np.float32))
    save_file({"features": probe_t, "logits": logits}, str(path / PROBE_FILE))
    manifest = read_manifest(path)
    manifest.pop("files", None)
    write_manifest(path, manifest)
    return path


def load_feed_bundle(path: str | Path, onnx_threads: int = 1) -> FeedBundle:
    """Verify, load and parity-check a feed bundle (module docstring).

    Raises:
        BundleError: missing/corrupt files, another kind, other feature names, or an ONNX graph that
            disagrees with the torch ranker on the probe rows.
    """
    path = Path(path)
    bundle = load_bundle(path, expected_kind=KIND)
    names = bundle.manifest.get("feature_names")
    if names != list(FEATURE_NAMES):
        raise BundleError(f"{path}: bundle features {names} differ from this code's {list(FEATURE_NAMES)}")
    for required in (ONNX_FILE, PROBE_FILE):
        if required not in bundle.manifest.get("files", {}):
            raise BundleError(f"{path}: manifest does not list {required}")
    t = bundle.tensors
    config = RankerConfig.model_validate(bundle.config["ranker"])
    state = {k.removeprefix("ranker."): v for k, v in t.items() if k.startswith("ranker.")}
    ranker = RankerMLP(config, torch.zeros(N_FEATURES), torch.ones(N_FEATURES))
    ranker.load_state_dict(state)
    ranker.eval()
    onnx = OnnxRanker(path / ONNX_FILE, threads=onnx_threads)
    probe = load_file(str(path / PROBE_FILE))
    x = probe["features"].numpy()
    expected = probe["logits"].numpy().astype(np.float64)
    for name, got in (("torch", predict_logits(ranker, x)), ("onnx", onnx(x))):
        err = float(np.max(np.abs(got - expected))) if len(x) else 0.0
        if not err <= PARITY_ATOL:
            raise BundleError(
                f"{path}: {name} ranker fails its parity check (max |logit diff| {err:.2e} > {PARITY_ATOL:.0e} "
                "on the bundle's probe rows); refusing to load it"
            )
    embeddings = FeedEmbeddings(
        t["emb.user"].numpy(), t["emb.item"].numpy(), t["emb.trained"].numpy().astype(bool),
        t["emb.topic"].numpy(), t["emb.creator"].numpy(),
    )  # fmt: skip
    return FeedBundle(
        path, bundle.manifest, ranker, onnx, embeddings, IdMap(bundle.user_ids, "user"), IdMap(bundle.item_ids, "item")
    )
