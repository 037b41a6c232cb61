"""Trainer checkpoints: one safetensors file with the weights, the Adam moments and the torch RNG,
and the trainer's JSON state (phase, step, early stopping, curve, data and config identity) in its
metadata. Nothing is pickled.

Used by ``training/train_gnn.py``; ``--resume`` and torchrun restarts read the latest one and refuse
one written for another dataset, split or configuration (:func:`check_compatible`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def save_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, meta: Mapping[str, Any]) -> None:
    """Write ``module``'s ``embedding.weight``, the optimizer state and the RNG, with ``meta`` as JSON.

    Written to a temp file and renamed, so a kill mid-write leaves the previous checkpoint intact.
    """
    tensors = {"model.embedding.weight": module.embedding.weight.detach().cpu().contiguous()}
    opt_state = optimizer.state_dict()
    opt_meta: dict[str, Any] = {"param_groups": opt_state["param_groups"], "steps": {}}
    for pid, st in opt_state["state"].items():
        for name, value in st.items():
            if name == "step":
                opt_meta["steps"][str(pid)] = float(value)
            else:
                tensors[f"opt.{pid}.{name}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(dict(meta)), "optimizer": json.dumps(opt_meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``module`` and ``optimizer``; return ``meta``."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    module.embedding.weight.data.copy_(tensors["model.embedding.weight"])
    opt_meta = json.loads(meta["optimizer"])
    opt_state: dict[str, Any] = {"param_groups": opt_meta["param_groups"], "state": {}}
    for pid, step in opt_meta["steps"].items():
        st: dict[str, Any] = {"step": torch.tensor(step)}
        for key, value in tensors.items():
            if key.startswith(f"opt.{pid}."):
                st[key[len(f"opt.{pid}.") :]] = value
        opt_state["state"][int(pid)] = st
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(meta["state"])


def config_hash(config: Mapping[str, Any], resumable: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """Hash of the config keys that change what is trained, and those keys.

    Args:
        config (Mapping): The resolved config as a nested dict.
        resumable (Iterable[str]): Dotted keys (``"eval.every"``) that may change on resume.
    """
    relevant = json.loads(json.dumps(dict(config)))  # a deep copy
    for dotted in resumable:
        *parents, leaf = dotted.split(".")
        node = relevant
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16], relevant


def check_compatible(path: Path, saved: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a checkpoint of another dataset, split or config, saying which and why.

    Raises:
        SystemExit: with an ``error: refusing to resume from ...`` message.
    """
    for key, what in (("data_fingerprint", "dataset"), ("split_hash", "split")):
        if saved.get(key) != expected[key]:
            raise SystemExit(f"error: refusing to resume from {path}: it was written for another {what} "
                             f"({key} {str(saved.get(key))[:12]}... != {expected[key][:12]}...)")
    if saved.get("config_hash") != expected["config_hash"]:
        old, new = _flat(saved.get("config", {})), _flat(expected["config"])
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SystemExit(f"error: refusing to resume from {path}: it was written with another config "
                         f"(config_hash {saved.get('config_hash')} != {expected['config_hash']}; differing keys: "
                         f"{', '.join(diff) or '?'}); start fresh with another checkpoint_dir or drop --resume")


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
