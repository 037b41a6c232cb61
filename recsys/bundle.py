"""Model bundles: a directory that fully describes a trained model, safe to load (no pickle).

Layout::

    <bundle>/manifest.json      kind, version, created_at, git commit, data fingerprint, config,
                                metrics, and the sha256 of every other file
    <bundle>/weights.safetensors
    <bundle>/user_ids.parquet   external ids in dense-index order (column ``id``)
    <bundle>/item_ids.parquet
    <bundle>/...                anything else (ONNX graphs written by ``serving.export``), listed
                                in the manifest like the rest

:func:`load_bundle` verifies every checksum and the model kind, and refuses a mismatch with a
:class:`BundleError` that names the file, before any weight is used.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file

from feedrec_common.hashing import sha256_file
from recsys.provenance import git_commit

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
BUNDLE_FORMAT = 1


class BundleError(RuntimeError):
    """A bundle is missing, corrupt, of the wrong kind, or fails its checksums."""


@dataclass
class Bundle:
    """A verified bundle in memory."""

    path: Path
    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})


def save_bundle(
    path: str | Path,
    *,
    kind: str,
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    data_fingerprint: str | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a bundle atomically (temp dir + rename) and return its path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(
            {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp / WEIGHTS),
        )
        write_ids(tmp / "user_ids.parquet", user_ids)
        write_ids(tmp / "item_ids.parquet", item_ids)
        manifest = {
            "format": BUNDLE_FORMAT,
            "kind": kind,
            "version": time.strftime("%Y%m%d%H%M%S", time.gmtime()),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": git_commit(),
            "data_fingerprint": data_fingerprint,
            "n_users": int(len(user_ids)),
            "n_items": int(len(item_ids)),
            "config": dict(config or {}),
            "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            **dict(extra or {}),
        }
        write_manifest(tmp, manifest)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_manifest(path: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """(Re)write ``manifest.json`` with checksums of every other file in the bundle directory."""
    path = Path(path)
    files = {
        str(p.relative_to(path)): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    out = {**dict(manifest), "files": files}
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path / MANIFEST)
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{path} is not a model bundle: {MANIFEST} is missing")
    try:
        return json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{mf}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def verify_bundle(path: str | Path, expected_kind: str | None = None) -> dict[str, Any]:
    """Check format, kind and every file checksum; return the manifest or raise :class:`BundleError`."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unsupported bundle format {manifest.get('format')!r}")
    if expected_kind is not None and manifest.get("kind") != expected_kind:
        raise BundleError(
            f"{path}: bundle holds a {manifest.get('kind')!r} model, not a {expected_kind!r} model"
        )
    files = manifest.get("files") or {}
    for required in (WEIGHTS, "user_ids.parquet", "item_ids.parquet"):
        if required not in files:
            raise BundleError(f"{path}: manifest does not list {required}")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise BundleError(f"{path}: file {name} listed in the manifest is missing")
        actual = sha256_file(f)
        if actual != digest:
            raise BundleError(
                f"{path}: checksum mismatch for {name} (manifest {digest[:12]}..., file {actual[:12]}...); "
                "the bundle is corrupt or was modified"
            )
    return manifest


def load_bundle(path: str | Path, expected_kind: str | None = None) -> Bundle:
    """Verify and load a bundle. Never unpickles anything."""
    path = Path(path)
    manifest = verify_bundle(path, expected_kind)
    tensors = load_file(str(path / WEIGHTS))
    return Bundle(
        path=path,
        manifest=manifest,
        tensors=tensors,
        user_ids=read_ids(path / "user_ids.parquet"),
        item_ids=read_ids(path / "item_ids.parquet"),
    )


def write_ids(path: Path, ids: np.ndarray) -> None:
    ids = np.asarray(ids)
    arr = pa.array(ids.tolist() if ids.dtype == object else ids)
    pq.write_table(pa.table({"id": arr}), path, compression="zstd")


def read_ids(path: Path) -> np.ndarray:
    col = pq.read_table(path).column("id")
    if pa.types.is_integer(col.type):
        return col.to_numpy().astype(np.int64)
    return np.asarray(col.to_pylist(), dtype=object)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
