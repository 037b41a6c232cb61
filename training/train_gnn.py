"""Train the GNN recommender (LightGCN + follow edges, recsys/models/gnn.py), single process or DDP.

One process (CPU, CUDA or MPS picked automatically):
    python training/train_gnn.py --config configs/train/gnn_small.yaml
    python training/train_gnn.py --config configs/train/gnn_gowalla.yaml --max-minutes 30

DDP on one machine (gloo on CPU/MPS, NCCL on CUDA):
    torchrun --standalone --nproc_per_node=2 training/train_gnn.py --config configs/train/gnn_small.yaml

DDP on two machines with G GPUs each (run on both, node_rank 0 and 1; the checkpoint directory must
be on a shared filesystem for --resume):
    torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=G \
        training/train_gnn.py --config configs/train/gnn_gowalla.yaml
    torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=G \
        training/train_gnn.py --config configs/train/gnn_gowalla.yaml

Fault tolerant (a killed worker restarts from the latest checkpoint; resuming is automatic when
TORCHELASTIC_RESTART_COUNT > 0):
    torchrun --standalone --nproc_per_node=2 --max-restarts=3 training/train_gnn.py --config ...

Search, refit and test any LightGCN-format folder within a budget (training/search.py; one process):
    python training/train_gnn.py --config configs/train/gnn_auto.yaml --set data.source=<folder> --max-minutes 45

Mini-batch training on sampled subgraphs (recsys/models/sampled.py), for graphs whose full
propagation does not fit a step: set ``minibatch: {num_neighbors: [10, 10, 10]}`` (one fan-out per layer).

Options: --set key=value (repeatable, e.g. --set model.temperature=0.2), --device cpu|cuda|mps,
--resume, --max-minutes M (phase 1 only; with a search: search + refit + test), --search, --out DIR,
--register NAME --alias ALIAS, --no-mlflow, --no-refit.

Protocol: the one every trainer follows (``training/protocol.py``; ``train_mf.py`` too). The
validation set is the split's own (data_gen: the temporal window) or, for a train/test split such as
Gowalla's, the shared carve-out of the training set (``data.valid_*``). Two phases in one run:
1. select: train on ``split.train``, evaluate validation Recall@K (K = ``max(eval.ks)``, on
   ``eval.sample_users`` users) after every ``eval.every`` epochs, keep the best epoch, stop after
   ``patience`` epochs without improvement (or ``epochs``). With ``lr_decay_patience`` set, the
   learning rate is first multiplied by ``lr_decay_factor`` after that many epochs without
   improvement (reduce-on-plateau; rank 0 decides, every rank applies it). Selection sees the split
   with its test set sealed.
2. refit (``refit: true``, skipped by ``--no-refit``): fresh weights, trained for the selected number
   of epochs on everything before the test window (all of the given training set, or train + the
   validation window, whose times feed the recency weights). This model is evaluated once on test
   (train and valid positives masked) and saved as the bundle, because in production the model
   knows everything before the test window. Without refit, the best phase-1 weights are used.
Checkpoints record the phase, so --resume and torchrun restarts continue either phase where it was.

How the work is split: every rank holds the (replicated) normalised adjacency and the embedding
table, because LightGCN propagates over the whole graph each step. The training *pairs* are sharded:
each epoch uses a seeded permutation of pair positions; rank r takes positions r::world_size, so its
per-step batch is global_batch / world_size pairs and no rank ever touches another's pairs. The
global batch's positive items (B ints) are all-gathered so the in-batch negatives are those of the
*global* batch; uniform negatives are a hash of (seed, epoch, global position/step), never of the
rank. Each rank's loss is sum(per-pair loss) * world_size / global_batch, so after DDP averages the
gradients the update equals the single-process update with the same global batch (tested). The
step itself (candidates, loss, backward, update) is ``recsys.models.gnn.train_step``, the one
``GNNRecommender.fit`` takes too.

Rank 0 alone evaluates, logs, checkpoints and writes the bundle; the other ranks receive its
early-stop decision by broadcast. The process group has a timeout (``pg_timeout_s``), and every rank
reports a failure as ``rank r failed: ...`` and exits non-zero, so one failing rank stops the job
instead of hanging it. The MLflow run is entered through a ``contextlib.ExitStack``: an exception,
or a SIGTERM (turned into one), ends it FAILED, never left RUNNING.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field, model_validator
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from feedrec_common.config import ConfigError, StrictModel, add_config_arguments, load_config
from recsys.data import DataError, Dataset, Split
from recsys.evaluation import evaluate
from recsys.graph import GraphArrays
from recsys.models.gnn import (
    GNNConfig,
    GNNRecommender,
    LightGCN,
    build_graph,
    epoch_permutation,
    make_optimizer,
    pair_probabilities,
    step_candidates,
    train_step,
    training_pairs,
)
from recsys.models.sampled import SubgraphLoss, make_loader, make_sparse_optimizer, sampling_data
from recsys.runtime import retain_freed_memory
from training.checkpoint import check_compatible, config_hash, load_checkpoint, save_checkpoint
from training.protocol import DataConfig, EvalConfig, Protocol, load_protocol
from training.search import (
    Budget,
    SearchConfig,
    TrialResult,
    format_point,
    in_space,
    mlflow_child,
    run_search,
)

# --- configuration (defaults; YAML files under configs/train/ override them) ----------------------


class GNNSearchConfig(SearchConfig):
    """:class:`training.search.SearchConfig` plus the switch the ``*_auto.yaml`` configs set.

    Args:
        enabled (bool): Search even without ``--search`` (one command for any folder). (default: False)
        start_from_config (bool): Trial 0 trains the configuration's own values of the space's keys
            (``lr``, ``global_batch``, ``model.*``), the sampler's points follow. With a budget of a few
            trials (one GNN trial on a 2-core machine is minutes) the first point is most of the
            search: a default known to train well beats a random draw. (default: False)
    """

    enabled: bool = False
    start_from_config: bool = False


class MiniBatchConfig(StrictModel):
    """Mini-batch training on sampled subgraphs (recsys/models/sampled.py) instead of full propagation.

    Args:
        num_neighbors (list[int]): Neighbours sampled per node at each hop; one entry per layer
            (``model.num_layers`` of them).
        num_negatives (int): Uniform negative posts per pair (BPR). (default: 1)
    """

    num_neighbors: list[int] = Field(min_length=1)
    num_negatives: int = Field(1, ge=1)


TOP_LEVEL_KEYS = ("lr", "global_batch")  # search-space keys of TrainGNNConfig itself; the others are GNNConfig's


class TrainGNNConfig(StrictModel):
    data: DataConfig = Field(default_factory=DataConfig)  # the shared protocol (training/protocol.py)
    model: GNNConfig = Field(default_factory=GNNConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)  # every: epochs
    seed: int = 0
    epochs: int = Field(50, ge=1)
    global_batch: int = Field(4096, ge=1)
    lr: float = Field(5e-3, gt=0.0)
    patience: int = Field(5, ge=1)  # epochs without a better validation Recall@K
    # "better" = above the best so far by more than this: a gain within the carve-out's noise must not
    # extend training (and so the refit) epoch after epoch at a decayed learning rate
    min_delta: float = Field(0.0, ge=0.0)
    lr_decay_patience: int | None = Field(None, ge=1)  # epochs without improvement before lr *= lr_decay_factor
    lr_decay_factor: float = Field(0.5, gt=0.0, lt=1.0)
    checkpoint_every: int = Field(200, ge=1)  # optimizer steps (also at every evaluated epoch end)
    checkpoint_dir: str | None = None  # default checkpoints/gnn_<dataset>
    pg_timeout_s: int = Field(300, ge=1)
    experiment: str = "gnn"
    out: str | None = None  # default bundles/gnn_<dataset>
    refit: bool = True  # phase 2: refit on everything before the test window for the selected epochs
    # pairs per epoch (a fresh seeded sample each epoch; default all): on a graph of 100M+ pairs an epoch
    # is hours, and validation, early stopping and the learning curve all count in epochs
    epoch_pairs: int | None = Field(None, ge=1)
    # --search (or search.enabled): training/search.py replaces phase 1; keys "lr", "global_batch" or GNNConfig fields
    search: GNNSearchConfig = Field(default_factory=GNNSearchConfig)
    # set: each step propagates the sampled K-hop neighbourhoods of its pairs (LinkNeighborLoader), not the graph
    minibatch: MiniBatchConfig | None = None

    @model_validator(mode="after")
    def _check_space(self) -> TrainGNNConfig:
        if self.minibatch is not None and len(self.minibatch.num_neighbors) != self.model.num_layers:
            raise ValueError(f"minibatch.num_neighbors needs one fan-out per layer ({self.model.num_layers}), "
                             f"got {len(self.minibatch.num_neighbors)}")
        for key in self.search.space:
            if key not in TOP_LEVEL_KEYS and key not in GNNConfig.model_fields:
                raise ValueError(f"search.space.{key}: not lr, global_batch or a model (GNNConfig) field")
        if self.search.start_from_config:
            for key, value in self.config_point().items():
                if not in_space(value, self.search.space[key]):
                    raise ValueError(f"search.start_from_config: {key}={value!r} is outside search.space.{key}")
        return self

    def config_point(self) -> dict[str, Any]:
        """This config's values of the search space's keys (the point ``start_from_config`` trains first)."""
        return {k: getattr(self, k) if k in TOP_LEVEL_KEYS else getattr(self.model, k) for k in self.search.space}

    def with_point(self, point: dict[str, Any], num_items: int) -> TrainGNNConfig:
        """This config with a search point applied; ``num_negatives`` capped at ``num_items``
        (uniform draws beyond the catalogue only repeat items, and every repeat of a row's positive
        is masked)."""
        top = {k: v for k, v in point.items() if k in TOP_LEVEL_KEYS}
        model = {k: v for k, v in point.items() if k not in top}
        if "num_negatives" in model:
            model["num_negatives"] = int(min(int(model["num_negatives"]), num_items))
        data = self.model_dump()
        data["model"] = {**data["model"], **model}
        return type(self).model_validate({**data, **top})




# Keys that may change between a checkpoint and its resume (they do not change what is trained).
RESUMABLE_KEYS = {"epochs", "patience", "eval.every", "checkpoint_every", "checkpoint_dir", "pg_timeout_s",
                  "experiment", "out", "refit", "search"}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for launch commands.")
add_config_arguments(parser)
parser.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None, help="default: cuda > mps > cpu")
parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint if there is one")
parser.add_argument("--max-minutes", type=float, default=None,
                    help="stop phase 1 after this wall time; with a search: the budget of search + refit + test")
parser.add_argument("--search", action="store_true",
                    help="choose hyper-parameters and epochs by a budgeted search on validation (search.*)")
parser.add_argument("--out", default=None, help="bundle directory (default: bundles/gnn_<dataset>)")
parser.add_argument("--register", default="gnn", help="registered model name (default: %(default)s)")
parser.add_argument("--alias", default="champion", help="alias moved to the new version (default: %(default)s)")
parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
parser.add_argument("--no-refit", action="store_true",
                    help="skip phase 2: test and serve the best phase-1 weights (trained on train only)")
args = parser.parse_args()
STARTED = time.monotonic()  # a search's budget covers the whole run, data loading included
refit_deadline: float | None = None  # monotonic time a searched run's refit must stop by (set after the search)

try:
    cfg = load_config(TrainGNNConfig, args.config, args.overrides)
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)

searching = args.search or cfg.search.enabled
if searching and not cfg.search.space:
    print("error: the search needs search.space (see configs/train/gnn_auto.yaml)", file=sys.stderr)
    sys.exit(2)
if searching and (args.resume or args.no_refit):
    print("error: --search always refits its winner and is not resumable; drop --resume / --no-refit",
          file=sys.stderr)
    sys.exit(2)
if searching and args.max_minutes is None and cfg.search.n_trials is None:
    print("error: a search needs --max-minutes or search.n_trials (else it never ends)", file=sys.stderr)
    sys.exit(2)

# --- DDP setup --------------------------------------------------------------------------------------
ddp = int(os.environ.get("RANK", -1)) != -1  # launched by torchrun?
if args.device:
    device = args.device
elif torch.cuda.is_available():
    device = "cuda"
elif torch.backends.mps.is_available():
    device = "mps"
else:
    device = "cpu"
if ddp:
    ddp_rank, ddp_local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    ddp_world_size = int(os.environ["WORLD_SIZE"])
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        device = f"cuda:{ddp_local_rank}"
        torch.cuda.set_device(device)
    # torchrun's agent keeps one TCPStore for the whole job, and restarted workers find the keys of
    # the killed round there: a worker could read a dead peer's address and fail with "Gloo
    # connectFullMesh failed ... Connection refused" (the --max-restarts test failed 1 run in 3).
    # A prefix per restart gives every round its own keys.
    pg_timeout = datetime.timedelta(seconds=cfg.pg_timeout_s)
    store, _, _ = next(dist.rendezvous("env://", timeout=pg_timeout))
    restart_store = dist.PrefixStore(f"restart_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend, store=restart_store, rank=ddp_rank, world_size=ddp_world_size,
                            timeout=pg_timeout)
    # the cores are shared by the local ranks: one BLAS pool per core, not per process
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", ddp_world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
else:
    ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
master_process = ddp_rank == 0  # only this process logs, evaluates and checkpoints


def _terminated(signum: int, frame: Any) -> None:
    # SIGTERM (torchrun stopping the other workers after a failure, a scheduler's preemption) would
    # end the process without unwinding: the MLflow run would stay RUNNING. As an exception it
    # unwinds main()'s ExitStack, which ends the run FAILED.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _terminated)
if searching and ddp_world_size > 1:
    print("error: run the search in one process (trials are sequential); torchrun a searched config's refit "
          "with its chosen values instead", file=sys.stderr)
    sys.exit(2)
restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
if cfg.global_batch % ddp_world_size:
    print(f"error: global_batch {cfg.global_batch} is not divisible by world size {ddp_world_size}", file=sys.stderr)
    sys.exit(2)
local_batch = cfg.global_batch // ddp_world_size
K = cfg.eval.k  # selection metric: validation Recall@K


def log(msg: str) -> None:
    if master_process:
        print(msg, flush=True)


# --- the state a checkpoint restores, and where a run writes -----------------------------------------


@dataclass
class TrainState:
    """Everything besides weights, optimizer and RNG that a resumed run needs (JSON in the checkpoint).

    ``epoch_lrs[e]`` is epoch ``e``'s learning rate: phase 1 appends each epoch's decision
    (reduce-on-plateau), the refit replays the list.
    """

    phase: Literal["select", "refit"] = "select"
    step: int = 0  # optimizer steps over both phases
    epoch: int = 0  # completed epochs of this phase
    step_in_epoch: int = 0
    best_recall: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0  # evaluated epochs since the best (early stopping)
    lr_bad_epochs: int = 0  # the same, reset at each decay (reduce-on-plateau)
    epoch_lrs: list[float] = field(default_factory=lambda: [cfg.lr])
    wall_s: float = 0.0  # training wall time so far, across restarts
    select_wall_s: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)  # one row per evaluated epoch
    epoch_loss_sum: float = 0.0
    epoch_pairs: float = 0.0
    done: bool = False  # this phase has finished (early stop or last epoch)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})


@dataclass(frozen=True)
class RunFiles:
    """Where this run reads and writes, and what a checkpoint must match to be resumed."""

    latest: Path  # checkpoint written every checkpoint_every steps and at each epoch end
    best: Path  # phase 1's best weights (used without refit)
    bundle: Path
    curve: Path
    identity: dict[str, Any]  # data fingerprint, split hash, config hash and the config

    def checkpoint(self, module: LightGCN, opt: torch.optim.Optimizer, state: TrainState, path: Path | None = None) -> None:
        """Rank 0 writes ``state`` (with the identity) and the weights; the other ranks do nothing."""
        if master_process:
            save_checkpoint(path or self.latest, module, opt, {**dataclasses.asdict(state), **self.identity})


class Clock:
    """Training wall time that continues across resumes (``state.wall_s`` is its saved value)."""

    def __init__(self, resumed_wall_s: float) -> None:
        self.t0 = time.time() - resumed_wall_s

    def wall(self) -> float:
        return time.time() - self.t0


# --- one phase: epochs of DDP steps, rank 0 validating after each ------------------------------------


def global_batch_items(pos_items: np.ndarray) -> np.ndarray:
    """The positives of the global batch in global order (row ``j*W + r`` is rank r's j-th pair)."""
    if not ddp:
        return pos_items
    padded = torch.full((local_batch,), -1, dtype=torch.int64)  # ranks may differ by one pair
    padded[: len(pos_items)] = torch.from_numpy(pos_items)
    gathered = [torch.empty_like(padded) for _ in range(ddp_world_size)]
    dist.all_gather(gathered, padded)
    interleaved = torch.stack(gathered, dim=1).reshape(-1)
    return interleaved[interleaved >= 0].numpy()


def validate_epoch(state: TrainState, module: LightGCN, opt: torch.optim.Optimizer, graph: GraphArrays,
                   data: Dataset, selection: Split, files: RunFiles, clock: Clock, lr: float, epoch_loss: float,
                   samples_per_s: float) -> tuple[bool, float]:
    """Rank 0, after an evaluated phase-1 epoch: validation Recall@K, best weights, curve, MLflow.

    Returns ``(stop, next epoch's learning rate)``.
    """
    epoch = state.epoch + 1
    rec = GNNRecommender.from_module(module.cpu(), graph, data, copy=False)  # evaluated before the next step
    module.to(device)
    res = evaluate(rec, selection, on="valid", ks=(K,), max_users=cfg.eval.sample_users, seed=cfg.seed)
    recall, ndcg = res.metrics[f"recall@{K}"], res.metrics[f"ndcg@{K}"]
    wall = clock.wall()
    row = {"epoch": epoch, "step": state.step, "wall_s": round(wall, 2), "loss": round(epoch_loss, 5),
           f"valid_recall@{K}": round(recall, 5), f"valid_ndcg@{K}": round(ndcg, 5),
           "samples_per_s": round(samples_per_s, 1), "lr": lr}
    state.curve.append(row)
    next_lr = lr
    improved = recall > state.best_recall + cfg.min_delta
    if improved:
        state.best_recall, state.best_epoch, state.bad_epochs, state.lr_bad_epochs = recall, epoch, 0, 0
        files.checkpoint(module, opt, state, path=files.best)
    else:
        state.bad_epochs += 1
        state.lr_bad_epochs += 1
        if cfg.lr_decay_patience is not None and state.lr_bad_epochs >= cfg.lr_decay_patience:
            state.lr_bad_epochs = 0
            next_lr = lr * cfg.lr_decay_factor
            print(f"learning rate -> {next_lr:.3g} (no better validation recall@{K} for "
                  f"{cfg.lr_decay_patience} epochs)", flush=True)
    print(f"epoch {epoch:3d} | loss {epoch_loss:.4f} | valid recall@{K} {recall:.4f} ndcg@{K} "
          f"{ndcg:.4f}{' *' if improved else ''} | {samples_per_s:,.0f} samples/s | {wall / 60:.1f} min", flush=True)
    if not args.no_mlflow:
        from recsys.tracking import shielded_mlflow

        shielded_mlflow.log_metrics({"loss": epoch_loss, f"valid_recall_at_{K}": recall, f"valid_ndcg_at_{K}": ndcg,
                            "samples_per_s": samples_per_s, "wall_s": wall, "lr": lr}, step=epoch)
    files.curve.parent.mkdir(parents=True, exist_ok=True)
    with open(files.curve, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(state.curve)
    return state.bad_epochs >= cfg.patience, next_lr


def train_phase(state: TrainState, module: LightGCN, opt: torch.optim.Optimizer, data: Dataset, graph: GraphArrays,
                epochs: int, files: RunFiles, clock: Clock, selection: Split | None = None) -> None:
    """Run epochs ``state.epoch..epochs-1`` of the current phase on ``data`` (resumable mid-epoch).

    Args:
        selection (Split, optional): Phase 1: rank 0 validates on it after every ``eval.every``
            epochs (:func:`validate_epoch`), and ``--max-minutes`` applies. ``None``: the refit.
    """
    users_all, items_all = training_pairs(data.user_items)
    loader = None
    if cfg.minibatch is None:
        adj = graph.to_torch().to(device)
        model = DDP(module) if ddp else module  # dense embedding gradients: DDP all-reduces [n_nodes, dim]
    else:  # sampled subgraphs: only the K-hop neighbourhoods of a step's pairs are propagated
        loader = make_loader(sampling_data(graph), users_all, items_all, data.n_users, cfg.minibatch.num_neighbors,
                             cfg.minibatch.num_negatives, seed=cfg.seed)
        sub = SubgraphLoss(module, cfg.model.l2).to(device)
        model = DDP(sub) if ddp else sub
    # Every step frees and re-allocates the same [num_nodes, dim] tensors: keep them from here on, once
    # setup's transients are handed back (recsys/runtime.py).
    retain_freed_memory()
    probabilities = pair_probabilities(data, cfg.model)
    n_pairs = min(len(users_all), cfg.epoch_pairs or len(users_all))  # this many of the epoch's permutation
    steps_per_epoch = math.ceil(n_pairs / cfg.global_batch)
    log(f"{state.phase}: {len(users_all)} training pairs ({n_pairs} per epoch), graph nnz {graph.nnz}, {epochs} epochs "
        f"of {steps_per_epoch} steps of {cfg.global_batch} pairs")
    while not state.done and state.epoch < epochs:
        epoch, lr = state.epoch, state.epoch_lrs[state.epoch]
        for group in opt.param_groups:
            group["lr"] = lr
        perm = epoch_permutation(len(users_all), cfg.seed, epoch, probabilities)[:n_pairs]
        shard = perm[ddp_rank::ddp_world_size]  # this rank's pairs for the epoch (positions r::W)
        model.train()
        t_epoch = time.time()
        bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch, desc=f"{state.phase} epoch {epoch}",
                   disable=not master_process, mininterval=10, file=sys.stdout, leave=False)
        out_of_time = False
        while state.step_in_epoch < steps_per_epoch:
            s = state.step_in_epoch
            local_pos = np.arange(s * local_batch, min((s + 1) * local_batch, len(shard)))
            idx = shard[local_pos]
            global_pos = local_pos * ddp_world_size + ddp_rank  # position in the epoch permutation
            global_n = min((s + 1) * cfg.global_batch, n_pairs) - s * cfg.global_batch
            pos_items = items_all[idx]
            if loader is None:
                batch_items = global_batch_items(pos_items) if cfg.model.uses_in_batch_negatives else pos_items
                negatives = step_candidates(cfg.model, cfg.seed, epoch, s, global_pos, batch_items, data.n_items)
                loss = train_step(model, opt, adj, users_all[idx], pos_items, negatives,
                                  loss_scale=ddp_world_size / global_n)
            else:  # the subgraph (and negatives) are a function of (seed, epoch, step, rank): resumable
                loader.link_sampler.reseed(cfg.seed, epoch, s, ddp_rank)
                batch = loader.collate_fn(torch.from_numpy(idx)).to(device)
                loss = model(batch, loss_scale=ddp_world_size / global_n)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss = loss.detach()
            # loss is sum * W / global_n on this rank; the global mean is its average over ranks
            state.epoch_loss_sum += float(loss) * global_n / ddp_world_size
            state.epoch_pairs += global_n / ddp_world_size
            state.step += 1
            state.step_in_epoch += 1
            bar.update(1)
            if selection is None and refit_deadline is not None and time.monotonic() > refit_deadline:
                out_of_time = True  # a searched run's budget covers the refit too (one process: no broadcast)
                break
            if selection is not None and args.max_minutes is not None:  # every rank stops at rank 0's step
                flag = torch.tensor([float(clock.wall() > args.max_minutes * 60)])
                if ddp:
                    dist.broadcast(flag, 0)
                if flag.item() > 0:
                    out_of_time = True
                    break
            if state.step % cfg.checkpoint_every == 0:
                state.wall_s = clock.wall()
                files.checkpoint(module, opt, state)
        bar.close()
        if out_of_time:
            log(f"--max-minutes {args.max_minutes}: {'phase 1' if selection is not None else 'the refit'} stops at "
                f"step {state.step}")
            if state.step_in_epoch < steps_per_epoch:  # mid-epoch: that epoch is not evaluated
                return

        # --- end of epoch: rank 0 evaluates and decides; every rank takes its decision -------------
        epoch_loss = state.epoch_loss_sum / max(state.epoch_pairs, 1)
        if ddp:
            t = torch.tensor([epoch_loss])
            dist.all_reduce(t)
            epoch_loss = float(t) / ddp_world_size
        samples_per_s = n_pairs / (time.time() - t_epoch)
        decision = torch.tensor([0.0, lr], dtype=torch.float64)  # [stop, next epoch's learning rate]
        if selection is not None and master_process and (epoch + 1) % cfg.eval.every == 0:
            stop, next_lr = validate_epoch(state, module, opt, graph, data, selection, files, clock, lr,
                                           epoch_loss, samples_per_s)
            decision[:] = torch.tensor([float(stop), next_lr], dtype=torch.float64)
        elif selection is None:
            log(f"{state.phase} epoch {epoch + 1:3d}/{epochs} | loss {epoch_loss:.4f} | {samples_per_s:,.0f} "
                f"samples/s | lr {lr:.3g} | {clock.wall() / 60:.1f} min")
            if master_process and not args.no_mlflow:
                from recsys.tracking import shielded_mlflow

                shielded_mlflow.log_metrics({f"{state.phase}_loss": epoch_loss}, step=epoch + 1)
        if ddp:
            dist.broadcast(decision, 0)  # the other ranks wait here for rank 0's evaluation
        stop = bool(decision[0].item()) or out_of_time
        if selection is not None:
            state.epoch_lrs.append(float(decision[1].item()))
        state.epoch, state.step_in_epoch, state.epoch_loss_sum, state.epoch_pairs = epoch + 1, 0, 0.0, 0.0
        state.done = stop or state.epoch >= epochs
        state.wall_s = clock.wall()
        files.checkpoint(module, opt, state)
        if stop and not out_of_time:
            log(f"early stop: no better validation recall@{K} for {cfg.patience} epochs "
                f"(best {state.best_recall:.4f} at epoch {state.best_epoch})")


# --- the search: replaces phase 1 with a budgeted search over configs and epochs -------------------


def evaluated_users(heldout, sample: int | None) -> int:
    """Users an evaluation of ``heldout`` ranks: those with held-out items, at most the ``sample``."""
    n = int((np.diff(heldout.indptr) > 0).sum())
    return n if sample is None else min(n, sample)


def test_eval_seconds(r: TrialResult, protocol: Protocol) -> float:
    """The final test evaluation's projected seconds: trial ``r``'s seconds per validation, scaled
    by how many more users the test ranks (``eval.test_sample_users`` of them at most)."""
    per_eval = r.eval_seconds / max(r.steps, 1)
    n_valid = evaluated_users(protocol.selection.valid, cfg.eval.sample_users)
    return per_eval * evaluated_users(protocol.split.test, cfg.eval.test_sample_users) / max(n_valid, 1)


def search_phase(protocol: Protocol, budget: Budget, name: str, use_mlflow: bool) -> tuple[TrialResult, list[TrialResult]]:
    """Trials of ``cfg.search`` on the selection view (test sealed), each trained by
    :meth:`GNNRecommender.fit` (the trainer's step) and validated after every epoch."""
    selection = protocol.selection
    train = selection.train
    refit_scale = protocol.refit_data().n_interactions / max(train.n_interactions, 1)

    def reserve(r: TrialResult) -> float:
        """Projected seconds of the refit of ``r`` (its best epoch count) and the test evaluation."""
        per_eval = r.eval_seconds / max(r.steps, 1)
        # + one more epoch of search: a trial (or a new one) only goes on while its next epoch fits too
        return r.seconds_per_step * (r.best_step * refit_scale + 1) + per_eval + test_eval_seconds(r, protocol) + 20.0

    def fit(point: dict[str, Any], reporter) -> None:
        c = cfg.with_point(point, train.n_items)
        clock = [time.monotonic()]

        def after_epoch(epoch: int, model: GNNRecommender) -> None:
            train_s = time.monotonic() - clock[0]
            t = time.monotonic()
            res = evaluate(model, selection, on="valid", ks=(K,), max_users=cfg.eval.sample_users, seed=cfg.seed)
            recall = res.metrics[f"recall@{K}"]
            if use_mlflow:
                from recsys.tracking import shielded_mlflow

                shielded_mlflow.log_metric(f"valid_recall_at_{K}", recall, step=epoch + 1)
            log(f"  epoch {epoch + 1:3d} | valid recall@{K} {recall:.4f} | {train_s:.1f} s | {budget.elapsed() / 60:.1f} min")
            reporter.report(recall, train_s, time.monotonic() - t)
            clock[0] = time.monotonic()

        GNNRecommender(c.model).fit(train, epochs=min(cfg.epochs, cfg.search.max_evals), batch_size=c.global_batch,
                                    lr=c.lr, seed=cfg.seed, callback=after_epoch)

    child_run = trial_done = None
    if use_mlflow:
        from recsys.tracking import shielded_mlflow

        def child_run(number: int, point: dict[str, Any]):
            return mlflow_child(cfg.experiment, f"gnn-{name}-trial{number:03d}",
                                params=cfg.with_point(point, train.n_items).model_dump(exclude={"search"}),
                                tags={"model": "gnn", "trial": number},
                                dataset_fingerprint=train.fingerprint(), split_hash=selection.hash())

        def trial_done(r: TrialResult) -> None:
            shielded_mlflow.set_tag("state", r.state)
            shielded_mlflow.log_metrics({f"valid/best_recall_at_{K}": max(r.value, -1.0), "best_epoch": r.best_step,
                                "epochs": r.steps, "train_seconds": r.seconds, "eval_seconds": r.eval_seconds})

    retain_freed_memory()  # see train_phase
    log(f"search: {protocol.describe()}; budget {budget.seconds / 60 if budget.seconds else float('inf'):.1f} min "
        f"for search + refit + test; space {list(cfg.search.space)}")
    return run_search(cfg.search, budget, fit, reserve=reserve, child_run=child_run, trial_done=trial_done, log=log,
                      first_point=cfg.config_point() if cfg.search.start_from_config else None)


def write_trials(path: Path, trials: list[TrialResult]) -> None:
    """One CSV row per trial: state, best validation recall and epoch, time, point."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", f"valid_recall@{K}", "best_epoch", "epochs", "train_s", "eval_s", "point"])
        for r in trials:
            writer.writerow([r.number, r.state, round(r.value, 5), r.best_step, r.steps, round(r.seconds, 1),
                             round(r.eval_seconds, 1), format_point(r.params)])


# --- the run: data, model, phase 1, phase 2, final evaluation and bundle ------------------------------


def run_files(protocol: Protocol, name: str) -> RunFiles:
    """Paths of this run, and the identity (data, split and ``cfg``) a checkpoint must match."""
    chash, crelevant = config_hash(cfg.model_dump(), RESUMABLE_KEYS)
    latest = Path(cfg.checkpoint_dir or f"checkpoints/gnn_{name}") / "latest.safetensors"
    bundle = Path(args.out or cfg.out or f"bundles/gnn_{name}")
    return RunFiles(latest=latest, best=latest.parent / "best.safetensors", bundle=bundle,
                    curve=bundle.parent / f"{bundle.name}.curve.csv",
                    identity={"data_fingerprint": protocol.source_train.fingerprint(),
                              "split_hash": protocol.split.hash(), "config_hash": chash, "config": crelevant})


def new_optimizer(module: LightGCN) -> torch.optim.Optimizer:
    """Fused dense Adam for full-graph steps; lazy (sparse) Adam for the mini-batch path's sparse gradients."""
    if cfg.minibatch is not None:
        return make_sparse_optimizer(module.parameters(), cfg.lr)
    return make_optimizer(module.parameters(), cfg.lr, device)


def main() -> int:
    global cfg, local_batch, refit_deadline  # a search replaces the configuration with its winner's
    try:
        protocol: Protocol = load_protocol(cfg.data, events=False)  # the GNN reads only positives and follows
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
    split, selection = protocol.split, protocol.selection  # selection: test sealed
    refit = cfg.refit and not args.no_refit
    train = split.train
    name = train.name or Path(cfg.data.source).name
    files = run_files(protocol, name)
    latest = files.latest
    log(f"data {name}: {train.n_users} users, {train.n_items} items, {train.n_interactions} training pairs, "
        f"{int(train.follows.nnz) if train.follows is not None else 0} follows; validation: {protocol.describe()}, "
        f"{int((np.diff(split.valid.indptr) > 0).sum())} users; world size {ddp_world_size} on {device}; "
        f"then {'refit on train + valid' if refit else 'no refit'}")

    # --- model, optimizer, resume ------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    module = LightGCN(train.n_users, train.n_items, cfg.model).to(device)
    opt = new_optimizer(module)
    state = TrainState()
    if (args.resume or restart_count > 0) and latest.is_file():
        saved = load_checkpoint(latest, module, opt)
        check_compatible(latest, saved, files.identity)
        state = TrainState.from_saved(saved)
        log(f"resumed from {latest}: {state.phase} epoch {state.epoch}, step {state.step} (restart {restart_count})")
    elif args.resume:
        log(f"--resume: no checkpoint at {latest}; starting fresh")
    clock = Clock(state.wall_s)

    with contextlib.ExitStack() as stack:
        run = None
        if master_process and not args.no_mlflow:
            from recsys.tracking import configure_tracking, start_run

            configure_tracking()
            # entered on the stack: an exception below ends the run FAILED instead of leaving it RUNNING
            run = stack.enter_context(start_run(
                cfg.experiment, f"gnn-{name}", params={**cfg.model_dump(), "world_size": ddp_world_size},
                tags={"model": "gnn", "dataset": name, "valid": protocol.describe()},
                dataset_fingerprint=protocol.source_train.fingerprint(), split_hash=split.hash()))

        # --- phase 1: a budgeted search (configs and epochs) or the epochs of one config, on validation ----
        search_winner = None
        if searching:
            budget = Budget(args.max_minutes * 60 if args.max_minutes is not None else None, start=STARTED)
            search_winner, trials = search_phase(protocol, budget, name, run is not None)
            write_trials(files.bundle.parent / f"{files.bundle.name}.search.csv", trials)
            cfg = cfg.with_point(search_winner.params, train.n_items)
            local_batch = cfg.global_batch // ddp_world_size
            files = run_files(protocol, name)
            # the refit's epochs: the winner's best, fewer only if they would not fit the budget left
            # (time per epoch measured in the search, scaled by the refit's share of pairs)
            per_epoch = search_winner.seconds_per_step * protocol.refit_data().n_interactions / train.n_interactions
            fit_epochs = search_winner.best_step
            if math.isfinite(budget.left()):
                fit_epochs = max(1, min(fit_epochs, int((budget.left() - 20.0) // max(per_epoch, 1e-9))))
                # and should the machine slow down, the refit stops where the test evaluation still fits
                refit_deadline = STARTED + budget.seconds - test_eval_seconds(search_winner, protocol) - 10.0
            log(f"search: {len(trials)} trials in {budget.elapsed() / 60:.1f} min; winner trial "
                f"{search_winner.number} (valid recall@{K} {search_winner.value:.4f} at epoch "
                f"{search_winner.best_step}): {format_point(search_winner.params)}; refit {fit_epochs} epochs"
                f"{'' if fit_epochs == search_winner.best_step else ' (capped by the budget)'}")
            if run is not None:
                from recsys.tracking import shielded_mlflow

                shielded_mlflow.log_params({f"best.{k}": v for k, v in search_winner.params.items()})
                shielded_mlflow.log_metrics({f"search/best_valid/recall_at_{K}": search_winner.value,
                                    "search/trials": len(trials), "search/seconds": budget.elapsed()})
            torch.manual_seed(cfg.seed)
            module = LightGCN(train.n_users, train.n_items, cfg.model).to(device)
            opt = new_optimizer(module)
            state = TrainState(best_recall=search_winner.value, best_epoch=fit_epochs, epoch_lrs=[cfg.lr] * (fit_epochs + 1),
                               select_wall_s=clock.wall(), wall_s=clock.wall())
        graph = build_graph(train, cfg.model)
        if state.phase == "select" and search_winner is None:
            train_phase(state, module, opt, train, graph, cfg.epochs, files, clock, selection=selection)
            if ddp:  # every rank needs rank 0's best epoch for the refit
                best = torch.tensor([float(state.best_epoch)])
                dist.broadcast(best, 0)
                state.best_epoch = int(best.item())
            state.select_wall_s = state.wall_s

        # --- phase 2: refit on everything before the test window for the selected number of epochs ------
        if refit and state.best_epoch > 0:
            serve_data = protocol.refit_data()
            serve_graph = build_graph(serve_data, cfg.model)
            if state.phase == "select":  # fresh weights and optimizer, as phase 1 started
                state = dataclasses.replace(state, phase="refit", epoch=0, step_in_epoch=0, epoch_loss_sum=0.0,
                                            epoch_pairs=0.0, done=False)
                torch.manual_seed(cfg.seed)
                module.load_state_dict(LightGCN(train.n_users, train.n_items, cfg.model).state_dict())
                module.to(device)
                opt = new_optimizer(module)
                files.checkpoint(module, opt, state)
            train_phase(state, module, opt, serve_data, serve_graph, state.best_epoch, files, clock)
        else:
            serve_data, serve_graph = protocol.source_train, graph
            if master_process and files.best.is_file():
                load_checkpoint(files.best, module.cpu(), new_optimizer(module))

        # --- final: the one test evaluation, the bundle, MLflow ---------------------------------------------
        if not master_process:
            return 0
        # seen = everything known before the test window (valid / carve-out included)
        rec = GNNRecommender.from_module(module.cpu(), serve_graph, serve_data)
        res = evaluate(rec, split, on="test", ks=tuple(cfg.eval.ks),  # masks train and valid positives
                       max_users=cfg.eval.test_sample_users, seed=cfg.seed)
        metrics = {"test_" + k: v for k, v in res.to_row().items() if isinstance(v, (int, float))}
        metrics.update({f"best_valid_recall_at_{K}": state.best_recall}, best_epoch=state.best_epoch,
                       select_wall_s=state.select_wall_s, train_wall_s=state.wall_s,
                       refit=float(state.phase == "refit"))
        if search_winner is not None:
            metrics.update(search_best_epoch=search_winner.best_step)
        metrics.update(run_wall_s=time.monotonic() - STARTED)  # load + search/phase 1 + refit + test
        rec.save(files.bundle, metrics={k: v for k, v in metrics.items() if not math.isnan(v)})
        log(f"run: {metrics['run_wall_s'] / 60:.1f} min from start to the saved bundle"
            f"{f' (budget {args.max_minutes} min)' if args.max_minutes is not None else ''}")
        print(f"test recall@{K} {res.metrics[f'recall@{K}']:.4f} ndcg@{K} {res.metrics[f'ndcg@{K}']:.4f} "
              f"(cold {res.slices.get('cold', {}).get(f'recall@{K}', float('nan')):.4f}) | best epoch "
              f"{state.best_epoch} | {'refit on train + valid' if state.phase == 'refit' else 'best weights'}"
              f" | bundle {files.bundle} | curve {files.curve}", flush=True)
        if run is not None:
            from recsys.tracking import log_bundle, register_bundle, shielded_mlflow

            shielded_mlflow.log_metrics(res.mlflow_metrics())
            shielded_mlflow.log_metrics({"select_wall_s": state.select_wall_s, "train_wall_s": state.wall_s})
            if files.curve.is_file():
                shielded_mlflow.log_artifact(str(files.curve))
            log_bundle(files.bundle)
            if args.register:
                version = register_bundle(run.info.run_id, args.register, alias=args.alias)
                print(f"registered {args.register} version {version} (alias {args.alias})", flush=True)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit:
        raise
    except BaseException as exc:  # every rank reports, then tears down so the others do not hang
        print(f"rank {ddp_rank} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        traceback.print_exc()
        if ddp and dist.is_initialized():
            dist.destroy_process_group()
        sys.exit(1)
    if ddp:
        dist.destroy_process_group()
    sys.exit(code)
