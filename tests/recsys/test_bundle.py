import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.bundle import BundleError, load_bundle, save_bundle, verify_bundle, write_manifest


def _save(path: Path, **kw) -> Path:
    return save_bundle(
        path,
        kind=kw.pop("kind", "toy"),
        tensors={"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
        user_ids=np.array([10, 20]),
        item_ids=np.array(["a", "b", "c"], dtype=object),
        config={"dim": 3},
        metrics={"recall@20": 0.5},
        **kw,
    )


def test_round_trip_keeps_tensors_ids_and_metadata(tmp_path):
    path = _save(tmp_path / "b")
    b = load_bundle(path, expected_kind="toy")
    assert torch.equal(b.tensors["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert b.user_ids.tolist() == [10, 20]
    assert b.item_ids.tolist() == ["a", "b", "c"]
    assert b.config == {"dim": 3}
    assert b.manifest["metrics"]["recall@20"] == pytest.approx(0.5)
    assert set(b.manifest["files"]) == {"weights.safetensors", "user_ids.parquet", "item_ids.parquet"}


def test_tampered_file_is_refused_naming_it(tmp_path):
    path = _save(tmp_path / "b")
    with open(path / "weights.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="checksum mismatch for weights.safetensors"):
        load_bundle(path)


def test_foreign_kind_is_refused(tmp_path):
    path = _save(tmp_path / "b", kind="als")
    with pytest.raises(BundleError, match="'als' model, not a 'gnn' model"):
        verify_bundle(path, expected_kind="gnn")


def test_missing_manifest_and_missing_file(tmp_path):
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    path = _save(tmp_path / "b")
    (path / "item_ids.parquet").unlink()
    with pytest.raises(BundleError, match="item_ids.parquet listed in the manifest is missing"):
        load_bundle(path)


def test_extra_files_are_covered_after_write_manifest(tmp_path):
    path = _save(tmp_path / "b")
    (path / "encoder.onnx").write_bytes(b"graph")
    manifest = json.loads((path / "manifest.json").read_text())
    write_manifest(path, manifest)
    verify_bundle(path)
    (path / "encoder.onnx").write_bytes(b"other")
    with pytest.raises(BundleError, match="encoder.onnx"):
        verify_bundle(path)


def test_overwrite_false_refuses_existing(tmp_path):
    path = _save(tmp_path / "b")
    with pytest.raises(BundleError, match="exists"):
        _save(path, overwrite=False)
