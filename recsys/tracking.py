"""MLflow helpers shared by every trainer: where runs go, what every run records, the model registry.

MLflow is used as a *store of our bundle directories* (``recsys.bundle``), never as a model
format: no ``mlflow.pyfunc``, nothing pickled. A registered model version points at a run's
``bundle/`` artifact directory; :func:`resolve_model_ref` downloads it and verifies its checksums.

Typical trainer::

    configure_tracking()                                   # env MLFLOW_TRACKING_URI or ./mlflow.db
    with start_run("mf-gowalla", "als", params=cfg.model_dump(), tags={"model": "als"},
                   dataset_fingerprint=split.train.fingerprint(), split_hash=split.hash()) as run:
        mlflow.log_metric("valid.recall@20", 0.17, step=5)
        path = model.save("bundles/mf_gowalla")
        log_bundle(path)
    version = register_bundle(run.info.run_id, "mf", alias="champion")
    resolve_model_ref("mf@champion")                        # -> local bundle directory
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import mlflow
from mlflow import ActiveRun, MlflowClient
from mlflow.exceptions import MlflowException

from recsys.bundle import BundleError, verify_bundle
from recsys.provenance import git_commit

#: Tag names every run carries (searchable in the MLflow UI).
TAG_GIT_COMMIT = "git_commit"
TAG_DATA_FINGERPRINT = "data.fingerprint"
TAG_SPLIT_HASH = "data.split_hash"


class ModelRefError(ValueError):
    """A model reference (``name@alias`` or a path) does not resolve to a bundle."""


def configure_tracking(uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at a store and return its URI.

    Precedence: the ``MLFLOW_TRACKING_URI`` environment variable, then ``uri``, then the embedded
    default ``sqlite:///<cwd>/mlflow.db``. For a SQLite store, artifacts of experiments created by
    :func:`start_run` go to ``mlartifacts/`` beside the database file.

    Args:
        uri (str, optional): Store to use when the environment does not name one. (default: None)
    """
    resolved = os.environ.get("MLFLOW_TRACKING_URI") or uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(resolved)
    mlflow.set_registry_uri(resolved)
    # MLflow exports the URIs to the environment; undo that so "the environment wins" keeps
    # meaning the caller's environment and a later call with another ``uri`` is honoured.
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return resolved


def _artifact_root(tracking_uri: str) -> str | None:
    """``<db dir>/mlartifacts`` for a SQLite store; None (the server decides) otherwise."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    # sqlite:////abs/path.db -> /abs/path.db; sqlite:///rel.db -> <cwd>/rel.db
    db_path = Path(unquote(tracking_uri[len("sqlite:///") :]))
    if not db_path.is_absolute():
        db_path = Path.cwd() / db_path
    return (db_path.parent / "mlartifacts").as_uri()


def experiment_id(name: str) -> str:
    """Id of experiment ``name``, created (with our artifact location) when missing."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    root = _artifact_root(mlflow.get_tracking_uri())
    location = f"{root}/{name}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"factors": 8}}`` -> ``{"model.factors": "8"}``; values become strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@contextmanager
def start_run(
    experiment: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    nested: bool = False,
    *,
    dataset_fingerprint: str | None = None,
    split_hash: str | None = None,
) -> Iterator[ActiveRun]:
    """Start an MLflow run that records what every run must record.

    Logs ``params`` flattened (``a.b.c``), tags ``git_commit`` (also as MLflow's own
    ``mlflow.source.git.commit``), ``data.fingerprint`` and ``data.split_hash`` when given.
    Call :func:`configure_tracking` first.

    Args:
        experiment (str): Experiment name; created when missing.
        run_name (str): Display name of the run.
        params (Mapping, optional): Nested hyper-parameters. (default: None)
        tags (Mapping, optional): Extra tags. (default: None)
        nested (bool, optional): A child of the active run (search trials). (default: False)
        dataset_fingerprint (str, optional): ``Dataset.fingerprint()`` of the training data.
        split_hash (str, optional): ``Split.hash()``.
    """
    commit = git_commit()
    all_tags = {TAG_GIT_COMMIT: commit, "mlflow.source.git.commit": commit}
    if dataset_fingerprint:
        all_tags[TAG_DATA_FINGERPRINT] = dataset_fingerprint
    if split_hash:
        all_tags[TAG_SPLIT_HASH] = split_hash
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    with mlflow.start_run(
        experiment_id=experiment_id(experiment), run_name=run_name, nested=nested, tags=all_tags
    ) as run:
        flat = flatten_params(params or {})
        if flat:
            mlflow.log_params(flat)
        yield run


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends; they are then handled as usual.

    A trainer turns SIGTERM into an exception so its MLflow run ends FAILED. Raised in the middle of
    a write to a SQLite store, that exception left the write's transaction open, and ending the run
    then failed with "database is locked" (the run stayed RUNNING). Only the main thread handles
    signals, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Shielded:
    """``mlflow``'s functions, each run inside :func:`signals_deferred`."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(mlflow, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with signals_deferred():
                return attr(*args, **kwargs)

        return call


shielded_mlflow = _Shielded()
"""Use as ``shielded_mlflow.log_metrics(...)``: a write a SIGTERM cannot cut in half."""


def log_bundle(bundle_path: str | Path, artifact_path: str = "bundle") -> str:
    """Upload a bundle directory (after verifying it) to the active run; return its artifact URI."""
    verify_bundle(bundle_path)
    mlflow.log_artifacts(str(bundle_path), artifact_path=artifact_path)
    return mlflow.get_artifact_uri(artifact_path)


def register_bundle(
    run_id: str, name: str, artifact_path: str = "bundle", alias: str | None = None
) -> str:
    """Register the bundle logged by run ``run_id`` as a new version of model ``name``.

    Creates the registered model when missing; the version's source is the run's artifact URI of
    ``artifact_path``. With ``alias`` (e.g. ``"champion"``) the alias moves to this version.

    Returns:
        str: The new version number.
    """
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="feedrec model bundle (recsys.bundle)")
        except MlflowException:  # created concurrently
            client.get_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(name, source=source, run_id=run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def resolve_model_ref(ref: str | Path, dst_dir: str | Path | None = None) -> Path:
    """Turn a model reference into a verified local bundle directory.

    Args:
        ref (str | Path): A bundle directory, ``name@alias`` (e.g. ``mf@champion``),
            ``name/<version>`` or the same prefixed with ``models:/``.
        dst_dir (str | Path, optional): Where registry downloads go; a new temporary directory
            when None. (default: None)

    Raises:
        ModelRefError: The path is not a bundle, or the registry has no such model/alias/version.
        BundleError: The downloaded bundle fails its checksums.
    """
    text = str(ref)
    path = Path(text)
    if path.exists():
        try:
            verify_bundle(path)
        except BundleError as exc:
            raise ModelRefError(f"{ref}: not a valid model bundle ({exc})") from None
        return path
    spec = text.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        elif "/" in spec:
            name, number = spec.rsplit("/", 1)
            version = client.get_model_version(name, number)
        else:
            raise ModelRefError(
                f"{ref}: no such path, and not a registry reference (expected name@alias or name/version)"
            )
    except MlflowException as exc:
        raise ModelRefError(f"{ref}: not found in the model registry at {mlflow.get_registry_uri()} "
                            f"({exc.message.splitlines()[0]})") from None
    dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="feedrec-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dst)))
    verify_bundle(local)
    return local
