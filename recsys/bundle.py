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
:class:`BundleError` that names the file, before any weight is used. The manifest itself is checked
first (:func:`check_manifest`): a JSON object with a supported ``format``, a ``kind`` string and a
``files`` object of ``name -> sha256``, every name relative and inside the bundle (no absolute path, no
``..``, no symlink out of it), so a hostile manifest can neither crash the loader nor make it read
(and hash) a file elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    """The parsed ``manifest.json`` of the bundle at ``path`` (a JSON object; see :func:`check_manifest`
    for its fields)."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{path} is not a model bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{mf}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mf}: unreadable: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mf}: must hold a JSON object, not {type(manifest).__name__}")
    return manifest


def check_manifest(path: str | Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest whose fields a loader would trip over (raises :class:`BundleError`).

    ``format`` must be :data:`BUNDLE_FORMAT`; ``kind`` a non-empty string; ``files`` an object of
    ``name -> sha256 hex``, each name a relative path inside the bundle (no absolute path, no ``..``
    part, no backslash, and no symlink that resolves outside the bundle directory).
    """
    path = Path(path)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unsupported bundle format {manifest.get('format')!r}")
    kind = manifest.get("kind")
    if not isinstance(kind, str) or not kind:
        raise BundleError(f"{path}: {MANIFEST} field 'kind' must be a non-empty string, not {kind!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{path}: {MANIFEST} field 'files' must be an object of name -> sha256, "
                          f"not {type(files).__name__}")  # fmt: skip
    root = path.resolve()
    for name, digest in files.items():
        parts = PurePosixPath(name).parts
        if not name or "\\" in name or "\0" in name or PurePosixPath(name).is_absolute() or ".." in parts:
            raise BundleError(f"{path}: {MANIFEST} lists the file name {name!r}: names must be relative paths "
                              "inside the bundle (no absolute path, no '..')")  # fmt: skip
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BundleError(f"{path}: {MANIFEST} checksum of {name!r} is not a sha256 hex digest")
        if not (path / name).resolve().is_relative_to(root):
            raise BundleError(f"{path}: file {name} listed in the manifest resolves outside the bundle")


def verify_bundle(path: str | Path, expected_kind: str | None = None) -> dict[str, Any]:
    """Check format, kind and every file checksum; return the manifest or raise :class:`BundleError`."""
    path = Path(path)
    manifest = read_manifest(path)
    check_manifest(path, manifest)
    if expected_kind is not None and manifest["kind"] != expected_kind:
        raise BundleError(
            f"{path}: bundle holds a {manifest['kind']!r} model, not a {expected_kind!r} model"
        )
    files = manifest["files"]
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
