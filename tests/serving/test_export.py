"""serving.export: ONNX graphs of every model kind match PyTorch (known and folded-in users)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from recsys.bundle import BundleError, verify_bundle
from recsys.models.base import Recommender
from serving.backends import OnnxEncoder, resolve_providers, tensorrt_available
from serving.export import FOLD_IN, USER_ENCODER, check_parity
from serving.settings import ServingSettings


@pytest.mark.parametrize("kind", ["als", "bpr", "gnn", "popular"])
def test_onnx_matches_torch_for_known_and_folded_in_users(kind, serving_bundles):
    path = serving_bundles[kind]
    manifest = verify_bundle(path)
    assert manifest["serving"]["fold_in"] == FOLD_IN
    model = Recommender.load(path)
    encoder = OnnxEncoder(path / USER_ENCODER, path / FOLD_IN, ["CPUExecutionProvider"])
    # A different seed than the export's own check: fresh users and fresh fold-in profiles.
    reports = check_parity(model, encoder, n_users=300, seed=11)
    assert set(reports) == {"known", "fold_in"}
    for report in reports.values():
        assert report.users == 300
        assert report.same_topk >= 0.999
        assert report.max_abs_score_diff <= 1e-4


def test_fold_in_graph_differs_from_known_user_vector(serving_bundles):
    """Guards against a fold-in graph that ignores its inputs (e.g. constant output)."""
    path = serving_bundles["gnn"]
    encoder = OnnxEncoder(path / USER_ENCODER, path / FOLD_IN, ["CPUExecutionProvider"])
    a = encoder.encode_new(np.array([[1, 2, 0]]), np.array([[1, 1, 0]], np.float32),
                           np.array([[0]]), np.array([[0]], np.float32))
    b = encoder.encode_new(np.array([[7, 8, 9]]), np.array([[1, 1, 1]], np.float32),
                           np.array([[5]]), np.array([[1]], np.float32))
    assert np.abs(a - b).max() > 1e-3


def test_model_without_exportable_fold_in_gets_no_graph(serving_bundles):
    manifest = verify_bundle(serving_bundles["random"])
    assert manifest["serving"]["fold_in"] is None
    assert not (serving_bundles["random"] / FOLD_IN).exists()


def test_tampered_onnx_is_refused(serving_bundles, tmp_path):
    import shutil

    from serving.loading import load_serving_model

    copy = tmp_path / "als"
    shutil.copytree(serving_bundles["als"], copy)
    with open(copy / USER_ENCODER, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_serving_model("als", str(copy), ServingSettings(parity_users=4))


def test_cli_exports_and_reports_parity(trained_bundles, tmp_path):
    out = tmp_path / "bpr-serving"
    run = subprocess.run([sys.executable, "-m", "serving.export", "--model", str(trained_bundles["bpr"]),
                          "--out", str(out), "--parity-users", "50"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "parity" in run.stdout
    assert json.loads((out / "manifest.json").read_text())["serving"]["parity"]["fold_in"]["users"] == 50


def test_cli_bad_ref_is_one_line_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "serving.export", "--model", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.startswith("error:") and "Traceback" not in run.stderr


def test_provider_resolution_without_tensorrt_says_so_once():
    """CPU sibling of the TensorRT test: on a machine without TensorRT one note explains it."""
    ok, _ = tensorrt_available()
    providers, notes = resolve_providers(["tensorrt", "cuda", "cpu"])
    names = [p if isinstance(p, str) else p[0] for p in providers]
    assert names[-1] == "CPUExecutionProvider"
    if not ok:
        assert "TensorrtExecutionProvider" not in names
        assert sum("TensorRT" in n for n in notes) == 1


def test_tensorrt_provider_runs_encoder(serving_bundles, tmp_path):
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT unavailable: {why}")
    path = serving_bundles["gnn"]
    providers, _ = resolve_providers(["tensorrt"], tmp_path / "trt", trt_fp16=True)
    encoder = OnnxEncoder(path / USER_ENCODER, path / FOLD_IN, providers)
    assert encoder.provider == "TensorrtExecutionProvider"
    cpu = OnnxEncoder(path / USER_ENCODER, path / FOLD_IN, ["CPUExecutionProvider"])
    users = np.arange(16)
    np.testing.assert_allclose(encoder.encode_known(users), cpu.encode_known(users), atol=2e-3)


def test_parity_counts_near_ties_as_agreement_but_not_real_swaps():
    """Regression: an ALS export on the data_gen tiny preset failed parity (same_topk 0.995) because two
    items scored 1e-7 apart swapped places between implicit's solver and the ONNX graph."""
    import torch

    from serving.export import compare

    def top(vectors: np.ndarray, k: int) -> list[list[int]]:  # the plain dense top-k the check compares
        return torch.topk(torch.from_numpy(vectors) @ items.T, k, dim=1).indices.tolist()

    items = torch.tensor([[1.0, 0.0], [1.0, 2e-6], [0.5, 0.0], [0.0, 1.0]])
    none = [np.array([], np.int64)]
    reference = np.array([[1.0, -1.0]], np.float32)
    tied = np.array([[1.0, 0.1]], np.float32)  # items 0 and 1 (2e-6 apart) swap, item 3 stays out of the top 2
    assert top(reference, 2) == [[0, 1]]
    assert top(tied, 2) == [[1, 0]]
    assert compare(reference, tied, items, none, k=2).same_topk == 1.0
    swapped = np.array([[1.0, 0.9]], np.float32)  # item 3 overtakes item 2 for real
    assert compare(reference, swapped, items, none, k=3).same_topk == 0.0
