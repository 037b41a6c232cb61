"""``training/train_gnn.py`` with faults injected from outside, for the fault-tolerance tests.

The trainer has no test hooks; this launcher patches two library functions before running the
script as ``__main__`` (one process, or each torchrun worker), driven by the environment:

- ``FEEDREC_TEST_KILL_AFTER_STEP=N``: SIGKILL the process right after it wrote the latest checkpoint
  at optimizer step ``N`` (first round only, so a torchrun restart can resume);
- ``FEEDREC_TEST_FAIL_AT_STEP=N`` (+ ``FEEDREC_TEST_FAIL_RANK``, default 1): that rank raises
  instead of taking its optimizer step number ``N`` (0-based).

    python tests/training/faulty_train_gnn.py --config ... (the trainer's arguments)
"""

from __future__ import annotations

import itertools
import os
import runpy
import signal
import sys
from pathlib import Path

import recsys.models.gnn
import training.checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "train_gnn.py"


def kill_after_checkpoint(step: int) -> None:
    save = training.checkpoint.save_checkpoint

    def save_then_die(path, module, optimizer, meta):
        save(path, module, optimizer, meta)
        if path.name == "latest.safetensors" and meta["step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    training.checkpoint.save_checkpoint = save_then_die


def fail_at_step(step: int) -> None:
    train_step, calls = recsys.models.gnn.train_step, itertools.count()

    def failing_step(*args, **kwargs):
        if next(calls) == step:
            raise RuntimeError(f"injected failure at step {step} (FEEDREC_TEST_FAIL_AT_STEP)")
        return train_step(*args, **kwargs)

    recsys.models.gnn.train_step = failing_step


if __name__ == "__main__":
    if "FEEDREC_TEST_KILL_AFTER_STEP" in os.environ and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        kill_after_checkpoint(int(os.environ["FEEDREC_TEST_KILL_AFTER_STEP"]))
    if "FEEDREC_TEST_FAIL_AT_STEP" in os.environ and (
        int(os.environ.get("RANK", "0")) == int(os.environ.get("FEEDREC_TEST_FAIL_RANK", "1"))
    ):
        fail_at_step(int(os.environ["FEEDREC_TEST_FAIL_AT_STEP"]))
    sys.argv = [str(SCRIPT), *sys.argv[1:]]
    runpy.run_path(str(SCRIPT), run_name="__main__")
