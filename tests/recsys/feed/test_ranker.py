"""The ranker: position-bias handling, metrics, ONNX export with a parity check at load."""

import json

import numpy as np
import pytest
import torch

from recsys.bundle import BundleError, read_manifest, write_manifest
from recsys.data.dataset import IdMap
from recsys.feed.bundle import ONNX_FILE, export_onnx, load_feed_bundle, save_feed_bundle
from recsys.feed.features import N_FEATURES, POSITION
from recsys.feed.ranker import (
    RankerConfig,
    RankerMLP,
    fit_ranker,
    log_loss,
    position_propensity,
    predict_logits,
    roc_auc,
)

from .helpers import random_embeddings


def _logged(n=24_000, seed=0):
    """Impressions whose click probability is (1 + position)^-0.5 * sigmoid(x . w - 2), positions random."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    pos = rng.integers(0, 15, size=n)
    x[:, POSITION] = pos
    w = np.zeros(N_FEATURES)
    w[:4] = [1.5, -1.0, 0.8, 0.5]  # a few informative features; the rest is noise
    true_logit = x.astype(np.float64) @ w - 2.0
    p = (1.0 + pos) ** -0.5 / (1.0 + np.exp(-true_logit))
    return x, rng.random(n) < p, true_logit


@pytest.mark.parametrize("position_bias", ["additive", "ipw", "none"])
def test_ranker_learns_the_position_free_click_logit(position_bias):
    x, y, true_logit = _logged()
    cfg = RankerConfig(hidden=[16], position_bias=position_bias, epochs=5, batch_size=512, lr=1e-2, seed=0)
    model, info = fit_ranker(cfg, x[:18_000], y[:18_000], x[18_000:], y[18_000:])
    top = x[18_000:].copy()
    top[:, POSITION] = 0.0  # inference: everything at the top slot
    z = predict_logits(model, top)
    assert np.corrcoef(z, true_logit[18_000:])[0, 1] > 0.9
    if position_bias == "additive":
        bias = model.position_bias.detach().numpy()[:15]
        assert bias[0] > bias[5] > bias[14]  # the examination decay is learnt as its own term
    assert info["best_epoch"] >= 0 and np.isfinite(info["valid_logloss"])


def test_propensity_is_the_relative_click_rate_of_each_slot():
    pos = np.repeat(np.arange(4), 10_000)
    rng = np.random.default_rng(0)
    clicked = rng.random(len(pos)) < 0.2 * (1.0 + pos) ** -0.5
    prop = position_propensity(pos, clicked, 4)
    np.testing.assert_allclose(prop, (1.0 + np.arange(4)) ** -0.5, atol=0.05)


def test_auc_and_log_loss_against_brute_force():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.standard_normal(300), 1)  # ties on purpose
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(brute)
    p = 1.0 / (1.0 + np.exp(-s))
    assert log_loss(y, s) == pytest.approx(-np.mean(y * np.log(p) + (~y) * np.log(1 - p)))


def _bundle(tmp_path, tiny_data, seed=0):
    torch.manual_seed(seed)
    model = RankerMLP(RankerConfig(hidden=[8]), torch.zeros(N_FEATURES), torch.ones(N_FEATURES)).eval()
    probe = np.random.default_rng(seed).standard_normal((64, N_FEATURES)).astype(np.float32)
    probe[:, POSITION] = 0
    path = save_feed_bundle(
        tmp_path / "feed", ranker=model, embeddings=random_embeddings(tiny_data), users=tiny_data.users,
        items=tiny_data.items, probe=probe, feed_config={"max_per_creator": 2},
    )
    return path, model, probe


def test_onnx_runtime_matches_torch_and_the_bundle_loads(tmp_path, tiny_data):
    path, model, probe = _bundle(tmp_path, tiny_data)
    bundle = load_feed_bundle(path)
    x = np.random.default_rng(1).standard_normal((500, N_FEATURES)).astype(np.float32)
    np.testing.assert_allclose(bundle.onnx(x), predict_logits(model, x), atol=1e-4)
    np.testing.assert_allclose(predict_logits(bundle.ranker, x), predict_logits(model, x), atol=1e-6)
    assert isinstance(bundle.users, IdMap) and bundle.feed_config == {"max_per_creator": 2}


def test_a_bundle_whose_onnx_graph_fails_parity_is_refused(tmp_path, tiny_data):
    path, _, _ = _bundle(tmp_path, tiny_data)
    other = RankerMLP(RankerConfig(hidden=[8]), torch.zeros(N_FEATURES), torch.ones(N_FEATURES))
    torch.nn.init.constant_(other.mlp[-1].bias, 3.0)
    export_onnx(other, path / ONNX_FILE)
    manifest = read_manifest(path)
    manifest.pop("files")
    write_manifest(path, manifest)  # checksums pass: only the parity check can catch it
    with pytest.raises(BundleError, match="parity"):
        load_feed_bundle(path)


def test_a_bundle_with_other_features_or_a_corrupt_file_is_refused(tmp_path, tiny_data):
    path, _, _ = _bundle(tmp_path, tiny_data)
    manifest = read_manifest(path)
    manifest["feature_names"] = ["age_days"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="features"):
        load_feed_bundle(path)
    path, _, _ = _bundle(tmp_path / "b", tiny_data)
    (path / ONNX_FILE).write_bytes(b"not onnx")
    with pytest.raises(BundleError, match="checksum"):
        load_feed_bundle(path)


def test_a_refit_without_validation_trains_exactly_the_given_epochs():
    # train_ranker's refit: every logged day, the selected number of epochs, the last weights kept
    x, y, true_logit = _logged()
    cfg = RankerConfig(hidden=[16], epochs=3, batch_size=512, lr=1e-2, seed=0)
    model, info = fit_ranker(cfg, x, y)
    assert info["epochs"] == 3 and info["best_epoch"] == 2 and np.isnan(info["valid_logloss"])
    top = x.copy()
    top[:, POSITION] = 0.0
    assert np.corrcoef(predict_logits(model, top), true_logit)[0, 1] > 0.9
