"""Every setting of the online service, in one pydantic-settings class.

Values come from the environment (prefix ``FEEDREC_``, plus the conventional unprefixed ``REDIS_URL``
and ``MLFLOW_TRACKING_URI``) or a ``.env`` file. The defaults need no server at all: the feature cache
lives in the process, the registry is the local SQLite MLflow store, and the A/B event log is a directory of
fsync'ed segment files (``data/events``; ``FEEDREC_EVENTS_DIR=memory`` keeps events in memory instead).

Examples::

    FEEDREC_MODELS="gnn=gnn@champion,mf=bundles/mf" FEEDREC_DEFAULT_MODEL=gnn python -m serving
    REDIS_URL=redis://localhost:6379/0 python -m serving --workers 2
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Model names become metric labels and URL-free keys; keep them simple.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")

Provider = Literal["tensorrt", "cuda", "cpu"]


class ServingSettings(BaseSettings):
    """Settings of ``python -m serving`` (see the module docstring for how they are read).

    Args:
        models (dict[str, str]): ``name=ref`` pairs, comma separated in the environment
            (``gnn=gnn@champion,mf=bundles/mf``). ``ref`` is a bundle directory or an MLflow
            registry reference ``model@alias`` / ``model/version``. (default: empty: the service
            starts, ``/readyz`` says not ready)
        default_model (str, optional): Model that answers when no experiment routes the user
            elsewhere. (default: the first of ``models``)
        experiments_dir (Path, optional): Directory of A/B experiment YAML files; when set, the
            A/B router (``abtest.assignment.Router``) decides the model per user. (default: None)
        providers (list[str]): ONNX Runtime execution providers to try, in order; unavailable ones
            are skipped with one log line. (default: tensorrt,cuda,cpu)
        trt_fp16 (bool): Let TensorRT build fp16 engines. (default: True)
        trt_cache_dir (Path): Where TensorRT engines are cached across restarts.
        export_dir (Path): Where a plain training bundle is exported to a serving bundle on first
            load. (default: bundles/.serving)
        data_dir (Path, optional): A ``data_gen`` output directory whose follows and interactions
            seed the feature cache (cache-aside source) for users the models do not know.
        redis_url (str, optional): ``REDIS_URL``; unset means the in-process LRU cache.
        mlflow_tracking_uri (str, optional): ``MLFLOW_TRACKING_URI`` for registry references.
        admin_token (SecretStr, optional): Enables ``POST /admin/reload`` (header
            ``X-Admin-Token``). (default: None: reload disabled)
        bundle_roots (list[Path]): Directories a reference sent to ``POST /admin/reload`` may point
            into (comma separated in the environment); registry references (``name@alias``) are
            always allowed, anything else is refused with 403. (default: bundles)
        max_body_bytes (int): Largest request body accepted; a larger one is answered 413 before it
            is read. (default: 65536)
        vector_cache (bool): Cache computed user vectors. (default: True)
        result_cache (bool): Also cache the top-100 ranking computed from the vector (repeat requests
            skip the catalogue scan; feedback drops it). (default: True)
        torch_threads (int): Threads of the top-k op per request; 1 avoids oversubscribing cores
            that concurrent requests and workers already use. (default: 1)
        topk_mode (str): ``exact`` scans the fp32 item matrix (``score_topk``); ``compact`` scans an
            int8 copy built at load and re-ranks ``k * topk_oversample`` candidates with exact fp32
            scores (``score_topk_compact``): exact scores and order, recall >= 0.99 of the exact
            top-k at oversample 4 (``benchmarks/bench_topk.py``), a quarter of the bytes per item.
            (default: exact)
        topk_oversample (int): Candidates per requested item in ``compact`` mode. (default: 4)
        vector_ttl_s (int): TTL of a cached user vector (and ranking). (default: 3600)
        features_ttl_s (int): TTL of a user's recent interactions and followees. (default: 7 days)
        max_recent (int): Recent interactions kept per user and fed to fold-in. (default: 50)
        max_followees (int): Followees fed to fold-in. (default: 100)
        lru_size (int): Entries of the in-process cache. (default: 100000)
        redis_timeout_s (float): Socket connect/read timeout of Redis calls. (default: 0.05)
        breaker_reset_s (float): After a Redis error, skip Redis for this long, then retry.
            (default: 3.0)
        parity_users (int): Users checked ONNX-vs-torch when a model loads. (default: 8)
        parity_tol (float): Largest allowed absolute score difference in that check. (default: 1e-4)
        route_mode (str): ``async`` runs ``/recommend`` on the event loop, ``threadpool`` in
            Starlette's thread pool (measured in ``benchmarks/bench_serve.py``). (default: async)
        encoder (str): ``onnx`` (ONNX Runtime) or ``torch`` (the PyTorch model itself; no parity
            check, for debugging). (default: onnx)
        onnx_threads (int): Intra-op threads per ONNX Runtime session. (default: 1)
        events_dir (Path, optional): Directory of the durable A/B event log
            (:func:`abtest.events.open_event_log`; the same variable ``python -m abtest flush|report``
            read). ``memory`` (or an empty value) keeps a bounded in-memory tail instead: not durable,
            no ``/experiments/{key}/report``. (default: ``data/events``)
        events_backend (str): ``auto`` writes to Redis streams when ``REDIS_URL`` is set and to segment
            files otherwise; ``files`` always uses the segment files (e.g. Redis as the feature cache
            only). (default: auto)
        events_retention_s (float): Feedback is accepted this long after its recommendation (the
            event log's shown-items window). (default: 86400)
        allow_sim_time (bool): Stamp exposures and outcomes with the ``X-Feedrec-Sim-Time`` request
            header (float Unix seconds) sent by ``python -m abtest simulate``; off, the header is
            ignored. For simulations only: it lets clients choose event times, and it turns off the
            retention window (simulated times can be years from now; the index stays bounded by its
            size). (default: False)
        drift_reference (Path, optional): Drift gauges on ``/metrics`` (``serving.drift_watch``): the
            served model's reference profile JSON or training dataset. (default: None, gauges off)
        drift_interval_s (float): Seconds between drift gauge updates (a background thread). (default: 300)
        drift_lookback_hours (float): Traffic each update reads. (default: 24)
    """

    model_config = SettingsConfigDict(
        env_prefix="FEEDREC_", env_file=".env", extra="ignore", populate_by_name=True
    )

    models: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    default_model: str | None = None
    experiments_dir: Path | None = None
    providers: Annotated[list[Provider], NoDecode] = Field(default_factory=lambda: ["tensorrt", "cuda", "cpu"])
    trt_fp16: bool = True
    trt_cache_dir: Path = Path("bundles/.trt_cache")
    export_dir: Path = Path("bundles/.serving")
    data_dir: Path | None = None
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "FEEDREC_REDIS_URL"))
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "FEEDREC_MLFLOW_TRACKING_URI")
    )
    admin_token: SecretStr | None = None
    bundle_roots: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("bundles")])
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 2**20)
    vector_cache: bool = True
    result_cache: bool = True
    torch_threads: int = Field(default=1, ge=1, le=64)
    topk_mode: Literal["exact", "compact"] = "exact"
    topk_oversample: int = Field(default=4, ge=1, le=64)
    vector_ttl_s: int = Field(default=3600, ge=1)
    features_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    max_recent: int = Field(default=50, ge=1, le=1000)
    max_followees: int = Field(default=100, ge=1, le=10000)
    lru_size: int = Field(default=100_000, ge=16)
    redis_timeout_s: float = Field(default=0.05, gt=0, le=10)
    breaker_reset_s: float = Field(default=3.0, gt=0, le=600)
    parity_users: int = Field(default=8, ge=0, le=1000)
    parity_tol: float = Field(default=1e-4, gt=0)
    route_mode: Literal["async", "threadpool"] = "async"
    encoder: Literal["onnx", "torch"] = "onnx"
    onnx_threads: int = Field(default=1, ge=0, le=64)
    events_dir: Path | None = Path("data/events")
    events_backend: Literal["auto", "files"] = "auto"
    events_retention_s: float = Field(default=86400.0, gt=0)
    allow_sim_time: bool = False
    drift_reference: Path | None = None
    drift_interval_s: float = Field(default=300.0, ge=0.1)
    drift_lookback_hours: float = Field(default=24.0, gt=0)

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in value.split(","))):
                name, sep, ref = part.partition("=")
                if not sep or not name.strip() or not ref.strip():
                    raise ValueError(f"model entry {part!r} is not of the form name=ref")
                pairs[name.strip()] = ref.strip()
            return pairs
        return value

    @field_validator("models")
    @classmethod
    def _check_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _MODEL_NAME.match(name):
                raise ValueError(f"model name {name!r}: use 1-32 letters, digits, '_' or '-'")
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        # docker-compose passes unset variables as "": that must not enable an empty token.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("events_dir", mode="before")
    @classmethod
    def _memory_events(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "memory", "none"):
            return None
        return value

    @field_validator("bundle_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip().lower() for p in value.split(",") if p.strip()]
        return value

    @model_validator(mode="after")
    def _check_default(self) -> ServingSettings:
        if self.default_model is None and self.models:
            self.default_model = next(iter(self.models))
        if self.default_model is not None and self.models and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of models {sorted(self.models)}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> ServingSettings:
    """The process-wide settings, read once from the environment."""
    return ServingSettings()
