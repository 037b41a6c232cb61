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

Options: --set key=value (repeatable, e.g. --set model.temperature=0.2), --device cpu|cuda|mps,
--resume, --max-minutes M (phase 1 only), --out DIR, --register NAME --alias ALIAS, --no-mlflow,
--no-refit.

Protocol (two phases in one run; the same one the ALS baseline follows):
1. select: train on ``split.train``, evaluate validation Recall@20 after every ``eval_every`` epochs,
   keep the best epoch, stop after ``patience`` epochs without improvement (or ``epochs``). With
   ``lr_decay_patience`` set, the learning rate is first multiplied by ``lr_decay_factor`` after that
   many epochs without improvement (reduce-on-plateau; rank 0 decides, every rank applies it).
2. refit (``refit: true``, skipped by ``--no-refit``): fresh weights, trained on
   ``split.train_with_valid()`` for the selected number of epochs; its graph has the validation
   engagements too (and their times, for the recency weights). This model is evaluated on test
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
gradients the update equals the single-process update with the same global batch (tested).

Rank 0 alone evaluates (validation Recall@20 each epoch), logs, checkpoints and writes the bundle;
the other ranks receive its early-stop decision by broadcast. The process group has a timeout
(``pg_timeout_s``), and every rank wraps its work in try/except that prints ``rank r failed: ...``,
so one failing rank makes the whole job exit non-zero instead of hanging.

Validation: data_gen splits have a temporal validation set. Gowalla has train/test only, so a
deterministic carve-out of the training data is held out (``data.valid_users`` users, a
``data.valid_fraction`` of each one's training items: random ones, or with ``data.valid_from:
latest`` each user's latest ones in file order) and used for early stopping (its refit is the full
training set); the test set is only evaluated once, at the end.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel as DDP

from feedrec_common.config import ConfigError, StrictModel, add_config_arguments, load_config
from recsys.data import DataError, Dataset, carve_validation, load_split
from recsys.graph import GraphArrays
from recsys.models.gnn import (
    GNNConfig,
    GNNRecommender,
    LightGCN,
    batch_negatives,
    build_graph,
    epoch_permutation,
    make_optimizer,
    pair_probabilities,
    training_pairs,
)
from recsys.runtime import retain_freed_memory

# --- configuration (defaults; YAML files under configs/train/ override them) ----------------------


class DataSection(StrictModel):
    source: str = "gowalla"  # "gowalla", a data_gen output dir, or a LightGCN-format dir
    valid_users: int = Field(5000, ge=1)  # carve-out size when the split has no validation set
    valid_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of each carved user's train items
    # which of them: "random", or each user's "latest" (by timestamps, else file order): see carve_validation
    valid_from: Literal["random", "latest"] = "random"
    eval_users: int | None = None  # per-epoch validation on a user sample (None: all)


class TrainGNNConfig(StrictModel):
    data: DataSection = DataSection()
    model: GNNConfig = GNNConfig()
    seed: int = 0
    epochs: int = Field(50, ge=1)
    global_batch: int = Field(4096, ge=1)
    lr: float = Field(5e-3, gt=0.0)
    patience: int = Field(5, ge=1)  # epochs without a better validation Recall@20
    # "better" = above the best so far by more than this: a gain within the carve-out's noise must not
    # extend training (and so the refit) epoch after epoch at a decayed learning rate
    min_delta: float = Field(0.0, ge=0.0)
    lr_decay_patience: int | None = Field(None, ge=1)  # epochs without improvement before lr *= lr_decay_factor
    lr_decay_factor: float = Field(0.5, gt=0.0, lt=1.0)
    eval_every: int = Field(1, ge=1)  # epochs
    checkpoint_every: int = Field(200, ge=1)  # optimizer steps (also at every evaluated epoch end)
    checkpoint_dir: str | None = None  # default checkpoints/gnn_<dataset>
    pg_timeout_s: int = Field(300, ge=1)
    experiment: str = "gnn"
    out: str | None = None  # default bundles/gnn_<dataset>
    refit: bool = True  # phase 2: refit on train + valid for the selected epochs (the test / served model)


# Keys that may change between a checkpoint and its resume (they do not change what is trained).
RESUMABLE_KEYS = {"epochs", "patience", "eval_every", "checkpoint_every", "checkpoint_dir", "pg_timeout_s",
                  "experiment", "out", "refit"}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for launch commands.")
add_config_arguments(parser)
parser.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None, help="default: cuda > mps > cpu")
parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint if there is one")
parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
parser.add_argument("--out", default=None, help="bundle directory (default: bundles/gnn_<dataset>)")
parser.add_argument("--register", default="gnn", help="registered model name (default: %(default)s)")
parser.add_argument("--alias", default="champion", help="alias moved to the new version (default: %(default)s)")
parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
parser.add_argument("--no-refit", action="store_true",
                    help="skip phase 2: test and serve the best phase-1 weights (trained on train only)")
args = parser.parse_args()

try:
    cfg = load_config(TrainGNNConfig, args.config, args.overrides)
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)

# Every step frees and re-allocates the same [num_nodes, dim] tensors: keep them (recsys/runtime.py).
retain_freed_memory()

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
restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
if cfg.global_batch % ddp_world_size:
    print(f"error: global_batch {cfg.global_batch} is not divisible by world size {ddp_world_size}", file=sys.stderr)
    sys.exit(2)


def log(msg: str) -> None:
    if master_process:
        print(msg, flush=True)


def config_hash(c: TrainGNNConfig) -> tuple[str, dict]:
    relevant = {k: v for k, v in c.model_dump().items() if k not in RESUMABLE_KEYS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16], relevant


def save_checkpoint(path: Path, module: LightGCN, opt: torch.optim.Optimizer, state: dict) -> None:
    """One safetensors file: weights + Adam moments as tensors, everything else as JSON metadata.

    Written to a temp file and renamed, so a kill mid-write leaves the previous checkpoint intact.
    """
    tensors = {"model.embedding.weight": module.embedding.weight.detach().cpu().contiguous()}
    opt_state = opt.state_dict()
    opt_meta = {"param_groups": opt_state["param_groups"], "steps": {}}
    for pid, st in opt_state["state"].items():
        for name, value in st.items():
            if name == "step":
                opt_meta["steps"][str(pid)] = float(value)
            else:
                tensors[f"opt.{pid}.{name}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "optimizer": json.dumps(opt_meta)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, module: LightGCN, opt: torch.optim.Optimizer) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    module.embedding.weight.data.copy_(tensors["model.embedding.weight"])
    opt_meta = json.loads(meta["optimizer"])
    opt_state = {"param_groups": opt_meta["param_groups"], "state": {}}
    for pid, step in opt_meta["steps"].items():
        st = {"step": torch.tensor(step)}
        for key, value in tensors.items():
            if key.startswith(f"opt.{pid}."):
                st[key[len(f"opt.{pid}.") :]] = value
        opt_state["state"][int(pid)] = st
    opt.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(meta["state"])


def check_compatible(path: Path, saved: dict, expected: dict) -> None:
    """Refuse a checkpoint of another dataset, split or config, saying which and why."""
    for key, what in (("data_fingerprint", "dataset"), ("split_hash", "split")):
        if saved.get(key) != expected[key]:
            raise SystemExit(f"error: refusing to resume from {path}: it was written for another {what} "
                             f"({key} {str(saved.get(key))[:12]}... != {expected[key][:12]}...)")
    if saved.get("config_hash") != expected["config_hash"]:
        old, new = saved.get("config", {}), expected["config"]
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SystemExit(f"error: refusing to resume from {path}: it was written with another config "
                         f"(config_hash {saved.get('config_hash')} != {expected['config_hash']}; differing keys: "
                         f"{', '.join(diff) or '?'}); start fresh with another checkpoint_dir or drop --resume")


def main() -> int:
    t_start = time.time()
    # --- data (identical on every rank) ------------------------------------------------------------------
    try:
        split = load_split(cfg.data.source)
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
    full_train = split.train
    if split.valid is None:
        try:
            split = carve_validation(split, cfg.data.valid_users, cfg.data.valid_fraction, cfg.seed,
                                     cfg.data.valid_from)
        except DataError as exc:
            raise SystemExit(f"error: {exc}") from None
    refit = cfg.refit and not args.no_refit
    train = split.train
    name = train.name or Path(cfg.data.source).name
    ckpt_path = Path(cfg.checkpoint_dir or f"checkpoints/gnn_{name}") / "latest.safetensors"
    out_dir = Path(args.out or cfg.out or f"bundles/gnn_{name}")
    curve_path = out_dir.parent / f"{out_dir.name}.curve.csv"
    local_batch = cfg.global_batch // ddp_world_size
    chash, crelevant = config_hash(cfg)
    identity = {"data_fingerprint": full_train.fingerprint(), "split_hash": split.hash(), "config_hash": chash,
                "config": crelevant}
    log(f"data {name}: {train.n_users} users, {train.n_items} items, {train.n_interactions} training pairs, "
        f"{int(train.follows.nnz) if train.follows is not None else 0} follows; "
        f"valid users {int((np.diff(split.valid.indptr) > 0).sum())}; world size {ddp_world_size} on {device}; "
        f"then {'refit on train + valid' if refit else 'no refit'}")

    # --- model, optimizer, resume ------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    module = LightGCN(train.n_users, train.n_items, cfg.model).to(device)
    opt = make_optimizer(module.parameters(), cfg.lr, device)
    state = {"phase": "select", "step": 0, "epoch": 0, "step_in_epoch": 0, "best_recall": -1.0, "best_epoch": -1,
             "bad_epochs": 0, "lr_bad_epochs": 0, "epoch_lrs": [cfg.lr], "wall_s": 0.0, "select_wall_s": 0.0, "curve": [], "epoch_loss_sum": 0.0, "epoch_pairs": 0, "done": False}
    if (args.resume or restart_count > 0) and ckpt_path.is_file():
        saved = load_checkpoint(ckpt_path, module, opt)
        check_compatible(ckpt_path, saved, identity)
        state.update({k: saved[k] for k in state if k in saved})
        log(f"resumed from {ckpt_path}: {state['phase']} epoch {state['epoch']}, step {state['step']} "
            f"(restart {restart_count})")
    elif args.resume:
        log(f"--resume: no checkpoint at {ckpt_path}; starting fresh")
    best_path = ckpt_path.parent / "best.safetensors"

    tracking = None
    if master_process and not args.no_mlflow:
        import mlflow

        from recsys.tracking import configure_tracking, start_run

        configure_tracking()
        tracking = start_run(cfg.experiment, f"gnn-{name}", params={**cfg.model_dump(), "world_size": ddp_world_size},
                             tags={"model": "gnn", "dataset": name}, dataset_fingerprint=full_train.fingerprint(),
                             split_hash=split.hash())
        run = tracking.__enter__()

    fail_at = os.environ.get("FEEDREC_TEST_FAIL_AT_STEP")  # test hook: this rank raises at that step
    fail_rank = int(os.environ.get("FEEDREC_TEST_FAIL_RANK", "1"))
    wall_offset = state["wall_s"] - (time.time() - t_start)
    from tqdm import tqdm

    from recsys.evaluation import evaluate

    def checkpoint() -> None:
        if master_process:
            save_checkpoint(ckpt_path, module, opt, {**state, **identity})
            kill_at = os.environ.get("FEEDREC_TEST_KILL_AFTER_STEP")  # test hook: simulate a crash
            if kill_at is not None and int(kill_at) == state["step"] and restart_count == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    def train_phase(data: Dataset, graph: GraphArrays, epochs: int, validate: bool) -> None:
        """Run epochs ``state["epoch"]..epochs-1`` of one phase on ``data`` (resumable mid-epoch).

        ``validate``: rank 0 evaluates on ``split.valid`` after every ``eval_every`` epochs, keeps the
        best weights in ``best_path``, writes the learning curve and decides early stopping.
        """
        adj = graph.to_torch().to(device)
        users_all, items_all = training_pairs(data.user_items)
        probabilities = pair_probabilities(data, cfg.model)
        n_pairs = len(users_all)
        steps_per_epoch = math.ceil(n_pairs / cfg.global_batch)
        phase = state["phase"]
        log(f"{phase}: {n_pairs} training pairs, graph nnz {graph.nnz}, {epochs} epochs of {steps_per_epoch} "
            f"steps of {cfg.global_batch} pairs")
        model = DDP(module) if ddp else module  # dense embedding gradients: DDP all-reduces [n_nodes, dim]
        stop = state["done"]
        while not stop and state["epoch"] < epochs:
            epoch = state["epoch"]
            # epoch_lrs[e] is epoch e's learning rate: phase 1 appends each decision (reduce-on-plateau),
            # the refit replays the list.
            lr = state["epoch_lrs"][epoch]
            for group in opt.param_groups:
                group["lr"] = lr
            perm = epoch_permutation(n_pairs, cfg.seed, epoch, probabilities)
            shard = perm[ddp_rank::ddp_world_size]  # this rank's pairs for the epoch (positions r::W)
            model.train()
            t_epoch = time.time()
            bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], desc=f"{phase} epoch {epoch}",
                       disable=not master_process, mininterval=10, file=sys.stdout, leave=False)
            while state["step_in_epoch"] < steps_per_epoch:
                s = state["step_in_epoch"]
                if fail_at is not None and int(fail_at) == state["step"] and ddp_rank == fail_rank:
                    raise RuntimeError(f"injected failure at step {state['step']} (FEEDREC_TEST_FAIL_AT_STEP)")
                local_pos = np.arange(s * local_batch, min((s + 1) * local_batch, len(shard)))
                idx = shard[local_pos]
                global_pos = local_pos * ddp_world_size + ddp_rank  # position in the epoch permutation
                global_n = min((s + 1) * cfg.global_batch, n_pairs) - s * cfg.global_batch
                pos_items = items_all[idx]
                negatives = batch_negatives(cfg.model, cfg.seed, epoch, s, global_pos, data.n_items)
                if cfg.model.loss == "softmax" and cfg.model.in_batch_negatives:
                    batch_items = pos_items
                    if ddp:  # the global batch's positives, in global order (pad: ranks may differ by one)
                        padded = torch.full((local_batch,), -1, dtype=torch.int64)
                        padded[: len(pos_items)] = torch.from_numpy(pos_items)
                        gathered = [torch.empty_like(padded) for _ in range(ddp_world_size)]
                        dist.all_gather(gathered, padded)
                        inter = torch.stack(gathered, dim=1).reshape(-1)  # row j*W + r = rank r's j-th
                        batch_items = inter[inter >= 0].numpy()
                    negatives = np.concatenate([batch_items[: cfg.model.max_in_batch], negatives])
                loss = model(adj, torch.from_numpy(users_all[idx]).to(device), torch.from_numpy(pos_items).to(device),
                             torch.from_numpy(negatives).to(device), loss_scale=ddp_world_size / global_n)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # loss is sum * W / global_n on this rank; the global mean is its average over ranks
                state["epoch_loss_sum"] += float(loss.detach()) * global_n / ddp_world_size
                state["epoch_pairs"] += global_n / ddp_world_size
                state["step"] += 1
                state["step_in_epoch"] += 1
                bar.update(1)
                if validate and args.max_minutes is not None:  # everyone stops at the same step: rank 0 decides
                    flag = torch.tensor([float(time.time() - t_start > args.max_minutes * 60)])
                    if ddp:
                        dist.broadcast(flag, 0)
                    if flag.item() > 0:
                        stop = True
                        break
                if state["step"] % cfg.checkpoint_every == 0:
                    state["wall_s"] = time.time() - t_start + wall_offset
                    checkpoint()
            bar.close()
            if state["step_in_epoch"] < steps_per_epoch:  # stopped mid-epoch by --max-minutes
                break
            # --- end of epoch: rank 0 evaluates and decides early stopping ------------------------------
            epoch_loss = state["epoch_loss_sum"] / max(state["epoch_pairs"], 1)
            if ddp:
                t = torch.tensor([epoch_loss])
                dist.all_reduce(t)
                epoch_loss = float(t) / ddp_world_size
            samples_per_s = n_pairs / (time.time() - t_epoch)
            wall = time.time() - t_start + wall_offset
            decision = torch.tensor([0.0, lr], dtype=torch.float64)  # [stop, next epoch's learning rate]
            if master_process and validate and (epoch + 1) % cfg.eval_every == 0:
                rec = GNNRecommender.from_module(module.cpu(), graph, data)
                module.to(device)
                res = evaluate(rec, split, on="valid", ks=(20,), max_users=cfg.data.eval_users, seed=cfg.seed)
                recall, ndcg = res.metrics["recall@20"], res.metrics["ndcg@20"]
                wall = time.time() - t_start + wall_offset
                row = {"epoch": epoch + 1, "step": state["step"], "wall_s": round(wall, 2),
                       "loss": round(epoch_loss, 5), "valid_recall@20": round(recall, 5),
                       "valid_ndcg@20": round(ndcg, 5), "samples_per_s": round(samples_per_s, 1), "lr": lr}
                state["curve"].append(row)
                improved = recall > state["best_recall"] + cfg.min_delta
                if improved:
                    state.update(best_recall=recall, best_epoch=epoch + 1, bad_epochs=0, lr_bad_epochs=0)
                    save_checkpoint(best_path, module, opt, {**state, **identity})
                else:
                    state["bad_epochs"] += 1
                    state["lr_bad_epochs"] += 1
                    if cfg.lr_decay_patience is not None and state["lr_bad_epochs"] >= cfg.lr_decay_patience:
                        state["lr_bad_epochs"] = 0
                        decision[1] = lr * cfg.lr_decay_factor
                        print(f"learning rate -> {float(decision[1]):.3g} (no better validation recall@20 for "
                              f"{cfg.lr_decay_patience} epochs)", flush=True)
                print(f"epoch {epoch + 1:3d} | loss {epoch_loss:.4f} | valid recall@20 {recall:.4f} ndcg@20 "
                      f"{ndcg:.4f}{' *' if improved else ''} | {samples_per_s:,.0f} samples/s | {wall / 60:.1f} min",
                      flush=True)
                if tracking is not None:
                    mlflow.log_metrics({"loss": epoch_loss, "valid_recall_at_20": recall, "valid_ndcg_at_20": ndcg,
                                        "samples_per_s": samples_per_s, "wall_s": wall, "lr": lr}, step=epoch + 1)
                curve_path.parent.mkdir(parents=True, exist_ok=True)
                with open(curve_path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    w.writeheader()
                    w.writerows(state["curve"])
                decision[0] = float(state["bad_epochs"] >= cfg.patience)
            elif not validate:
                log(f"{phase} epoch {epoch + 1:3d}/{epochs} | loss {epoch_loss:.4f} | {samples_per_s:,.0f} "
                    f"samples/s | lr {lr:.3g} | {wall / 60:.1f} min")
                if tracking is not None:
                    mlflow.log_metrics({f"{phase}_loss": epoch_loss}, step=epoch + 1)
            if ddp:
                dist.broadcast(decision, 0)  # the other ranks wait here for rank 0's evaluation
            stop = bool(decision[0].item())
            if validate:  # every rank takes rank 0's learning rate for the next epoch
                state["epoch_lrs"].append(float(decision[1].item()))
            state.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_pairs=0)
            state["done"] = stop or state["epoch"] >= epochs
            state["wall_s"] = time.time() - t_start + wall_offset
            checkpoint()
            if stop:
                log(f"early stop: no better validation recall@20 for {cfg.patience} epochs "
                    f"(best {state['best_recall']:.4f} at epoch {state['best_epoch']})")

    # --- phase 1: train on split.train, select the epoch on validation ----------------------------------
    graph = build_graph(train, cfg.model)
    if state["phase"] == "select":
        train_phase(train, graph, cfg.epochs, validate=True)
        if ddp:  # every rank needs rank 0's best epoch for the refit
            best = torch.tensor([float(state["best_epoch"])])
            dist.broadcast(best, 0)
            state["best_epoch"] = int(best.item())
    select_wall = state["wall_s"] if state["phase"] == "select" else state["select_wall_s"]

    # --- phase 2: refit on train + valid for the selected number of epochs ------------------------------
    if refit and state["best_epoch"] > 0:
        serve_data = split.train_with_valid()  # with each pair's time, for the recency weights
        serve_graph = build_graph(serve_data, cfg.model)
        if state["phase"] == "select":  # fresh weights and optimizer, as phase 1 started
            state.update(phase="refit", epoch=0, step_in_epoch=0, epoch_loss_sum=0.0, epoch_pairs=0, done=False,
                         select_wall_s=select_wall)
            torch.manual_seed(cfg.seed)
            module.load_state_dict(LightGCN(train.n_users, train.n_items, cfg.model).state_dict())
            module.to(device)
            opt = make_optimizer(module.parameters(), cfg.lr, device)
            checkpoint()
        train_phase(serve_data, serve_graph, state["best_epoch"], validate=False)
    else:
        serve_data, serve_graph = full_train, graph
        if master_process and best_path.is_file():
            load_checkpoint(best_path, module.cpu(), torch.optim.Adam(module.parameters(), lr=cfg.lr))

    # --- final: bundle, test metrics, MLflow -----------------------------------------------------------
    if master_process:
        rec = GNNRecommender.from_module(module.cpu(), serve_graph, serve_data)
        res = evaluate(rec, split, on="test", ks=(20,))  # masks train and valid positives
        metrics = {"test_" + k: v for k, v in res.to_row().items() if isinstance(v, (int, float))}
        metrics.update(best_valid_recall_at_20=state["best_recall"], best_epoch=state["best_epoch"],
                       select_wall_s=select_wall, train_wall_s=state["wall_s"], refit=float(state["phase"] == "refit"))
        # serve with everything known before the test window as "seen" (valid / carve-out included)
        rec._remember(split.train_with_valid() if refit else full_train)
        rec.save(out_dir, metrics={k: v for k, v in metrics.items() if not math.isnan(v)})
        print(f"test recall@20 {res.metrics['recall@20']:.4f} ndcg@20 {res.metrics['ndcg@20']:.4f} "
              f"(cold {res.slices.get('cold', {}).get('recall@20', float('nan')):.4f}) | best epoch "
              f"{state['best_epoch']} | {'refit on train + valid' if state['phase'] == 'refit' else 'best weights'}"
              f" | bundle {out_dir} | curve {curve_path}", flush=True)
        if tracking is not None:
            from recsys.tracking import log_bundle, register_bundle

            mlflow.log_metrics(res.mlflow_metrics())
            mlflow.log_metrics({"select_wall_s": select_wall, "train_wall_s": state["wall_s"]})
            mlflow.log_artifact(str(curve_path))
            log_bundle(out_dir)
            run_id = run.info.run_id
            tracking.__exit__(None, None, None)
            if args.register:
                version = register_bundle(run_id, args.register, alias=args.alias)
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
