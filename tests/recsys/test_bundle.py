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


def _rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # issue 11 item 5: a missing "kind" raised KeyError, "files" as a list AttributeError
        ({"kind": None}, "'kind' must be a non-empty string"),
        ({"kind": 3}, "'kind' must be a non-empty string"),
        ({"files": ["weights.safetensors", "user_ids.parquet", "item_ids.parquet"]}, "'files' must be an object"),
        ({"files": {"weights.safetensors": 5}}, "not a sha256 hex digest"),
        ({"format": None}, "unsupported bundle format"),
    ],
)
def test_malformed_manifest_is_a_bundle_error(tmp_path, changes, message):
    path = _save(tmp_path / "b")
    _rewrite_manifest(path, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_manifest_that_is_not_an_object_is_a_bundle_error(tmp_path):
    path = _save(tmp_path / "b")
    (path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="must hold a JSON object"):
        verify_bundle(path)


@pytest.mark.parametrize("name", ["../../../../../etc/hostname", "/etc/hostname", "sub/../../x", "a\\..\\b"])
def test_manifest_file_names_cannot_leave_the_bundle(tmp_path, name):
    """Issue 11 item 6: a manifest listing ``../../../../../etc/hostname`` made the loader hash that file."""
    path = _save(tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="relative paths inside the bundle"):
        verify_bundle(path)


def test_symlink_out_of_the_bundle_is_refused(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not a model file")
    path = _save(tmp_path / "b")
    (path / "extra.bin").symlink_to(outside)
    write_manifest(path, json.loads((path / "manifest.json").read_text()))  # lists extra.bin with its real hash
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        verify_bundle(path)
