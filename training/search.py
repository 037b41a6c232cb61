"""Hyper-parameter search under a wall-clock budget, on validation only (``train_gnn``, ``train_mf``).

How a search runs (:func:`run_search`):

- A seeded Optuna TPE sampler proposes points of the space (log-uniform ranges or lists);
  the first ``startup_trials`` points are random, so the model of the results has data to fit.
- Each trial trains and reports validation Recall@K after every evaluation (GNN: epoch; ALS:
  ``eval.every`` iterations). Asynchronous successive halving (ASHA, Li et al. 2020: Optuna's
  ``SuccessiveHalvingPruner``) stops a trial at a rung (``min_resource * eta^k`` evaluations) when
  its best recall so far is not in the top ``1/eta`` of the trials that reached that rung; early stopping stops
  it after ``patience`` evaluations without a better recall.
- A trial's value is its best validation recall, at its best evaluation (the epochs the refit
  trains). The winner is the trial with the highest value (ties: the earlier trial).
- The budget covers search + refit + final evaluation: the search stops (mid-trial too) once the
  time spent plus what the refit of the best trial so far is projected to take
  (:class:`Budget`'s ``reserve``) would pass the deadline.

Trials run one after another (the 2-core machine has no room for parallel ones), so the sequence
of trials and every pruning decision is a function of the seed and the data: the same command
gives the same trials. A budget that runs out earlier cuts the sequence short, nothing else.
Only the selection view of a split (its test set sealed, ``training/protocol.py``) reaches a
trial; the tests check that a poisoned test split changes no trial.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from pydantic import Field, model_validator

from feedrec_common.config import StrictModel

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trainers print one line per trial themselves


class Range(StrictModel):
    """A numeric search dimension ``[low, high]``.

    Args:
        low (float): Smallest value.
        high (float): Largest value.
        log (bool): Sample log-uniformly (scale parameters: rates, penalties, sizes). (default: True)
        integer (bool): Integer values. (default: False)
    """

    low: float
    high: float
    log: bool = True
    integer: bool = False

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class SearchConfig(StrictModel):
    """Budgeted search: sampler, pruner, early stopping and space.

    Args:
        n_trials (int, optional): Stop after this many trials; ``None``: when the budget runs out.
            (default: None)
        seed (int): Seeds the sampler. (default: 0)
        startup_trials (int): Random points before TPE models the results. (default: 5)
        min_resource (int): Evaluations before a trial's first rung. (default: 1)
        reduction_factor (int): ``eta``: a rung keeps the top ``1/eta``. (default: 3)
        patience (int): Evaluations without a better recall before a trial stops. (default: 3)
        max_evals (int): Evaluations (GNN: epochs) a trial runs at most. (default: 30)
        space (dict): Parameter -> :class:`Range` or a list of candidates.
    """

    n_trials: int | None = Field(None, ge=1)
    seed: int = 0
    startup_trials: int = Field(5, ge=0)
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    patience: int = Field(3, ge=1)
    max_evals: int = Field(30, ge=1)
    space: dict[str, Range | list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_space(self) -> SearchConfig:
        for key, values in self.space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"space.{key}: needs at least one value")
        return self


def suggest(trial: optuna.Trial, space: dict[str, Range | list[Any]]) -> dict[str, Any]:
    """One point of ``space`` from ``trial`` (keys in the space's order)."""
    point: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            point[name] = spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
        elif spec.integer:
            point[name] = trial.suggest_int(name, math.ceil(spec.low), math.floor(spec.high), log=spec.log)
        else:
            point[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return point


def in_space(value: Any, spec: Range | list[Any]) -> bool:
    """Whether ``value`` is one of a list's candidates or inside a range."""
    if isinstance(spec, list):
        return value in spec
    return spec.low <= value <= spec.high


class Budget:
    """Wall-clock budget of a whole run: search, then refit and final evaluation.

    ``expired()`` is true once the time spent plus ``reserve`` (seconds the rest of the run is
    projected to need: set by the search from its best trial) passes ``seconds``.

    Args:
        seconds (float, optional): The budget; ``None``: unlimited.
        start (float, optional): ``time.monotonic()`` the run started at (default: now).
    """

    def __init__(self, seconds: float | None, start: float | None = None) -> None:
        self.seconds = seconds
        self.start = time.monotonic() if start is None else start
        self.reserve = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds left before the deadline (``inf`` without one), not counting the reserve."""
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.seconds is not None and self.elapsed() + self.reserve >= self.seconds


@dataclass
class TrialResult:
    """One trial: its point, its best validation value and when it was reached."""

    number: int
    params: dict[str, Any]
    value: float = -math.inf
    best_step: int = 0  # evaluations (GNN: epochs) at the best value
    steps: int = 0  # evaluations done
    seconds: float = 0.0  # training time, evaluation excluded
    eval_seconds: float = 0.0
    state: Literal["complete", "pruned", "stopped", "budget", "failed"] = "complete"
    curve: list[float] = field(default_factory=list)
    run_id: str | None = None

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)


class TrialStopped(Exception):
    """Raised by :meth:`Reporter.report` to end a trial early (not an error)."""


class Reporter:
    """What a trial's fit calls after each evaluation: records the curve, prunes, stops.

    ``report(value, train_seconds, eval_seconds)`` raises :class:`TrialStopped` when the trial must
    end: pruned by ASHA, ``patience`` evaluations without a better value, ``max_evals`` reached, or
    the budget spent.
    """

    def __init__(self, trial: optuna.Trial, result: TrialResult, cfg: SearchConfig, budget: Budget,
                 on_report: Callable[[TrialResult], None] | None = None) -> None:
        self.trial, self.result, self.cfg, self.budget, self.on_report = trial, result, cfg, budget, on_report

    def report(self, value: float, train_seconds: float, eval_seconds: float = 0.0) -> None:
        r = self.result
        r.steps += 1
        r.seconds += train_seconds
        r.eval_seconds += eval_seconds
        r.curve.append(value)
        if value > r.value:
            r.value, r.best_step = value, r.steps
        if self.on_report is not None:
            self.on_report(r)
        # ASHA compares trials at a rung by what each would be worth if it stopped there: its best
        # value so far (the refit trains its best epoch count), not its latest. A trial whose curve
        # dipped at the rung was otherwise pruned below a peer with a lower best (Amazon-CDs: 0.1023
        # best, 0.0974 at the rung, pruned against 0.1000).
        self.trial.report(r.value, r.steps)
        if self.budget.expired():  # first: a deadline that has passed is why the trial ends, whatever else holds
            r.state = "budget"
            raise TrialStopped
        if self.trial.should_prune():
            r.state = "pruned"
            raise TrialStopped
        if r.steps - r.best_step >= self.cfg.patience or r.steps >= self.cfg.max_evals:
            r.state = "stopped" if r.steps - r.best_step >= self.cfg.patience else "complete"
            raise TrialStopped


def run_search(
    cfg: SearchConfig,
    budget: Budget,
    fit: Callable[[dict[str, Any], Reporter], None],
    reserve: Callable[[TrialResult], float] | None = None,
    child_run: Callable[[int, dict[str, Any]], contextlib.AbstractContextManager[Any]] | None = None,
    trial_done: Callable[[TrialResult], None] | None = None,
    log: Callable[[str], None] = print,
    first_point: dict[str, Any] | None = None,
) -> tuple[TrialResult, list[TrialResult]]:
    """Trials until ``cfg.n_trials`` or the budget; returns ``(winner, all trials)``.

    Args:
        fit: Trains one point, calling ``reporter.report(...)`` after every evaluation; a
            :class:`TrialStopped` it lets through ends the trial normally.
        reserve: Seconds the refit + final evaluation of a trial would take; the budget keeps
            ``reserve(best so far)`` free.
        child_run: A context manager per trial (an MLflow child run); what it yields may have
            ``.info.run_id``.
        trial_done: Called with each finished trial inside its ``child_run`` (to log its summary).
        first_point: Trial 0's point (a known-good default, e.g. the configuration's own values),
            the sampler's points after it; each value must lie in ``cfg.space``.

    Raises:
        RuntimeError: no trial reached a single evaluation within the budget.
    """
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.startup_trials)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_resource,
                                                    reduction_factor=cfg.reduction_factor)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    if first_point is not None:
        for key, value in first_point.items():
            if not in_space(value, cfg.space[key]):
                raise ValueError(f"first point: {key}={value!r} is outside search.space.{key}")
        study.enqueue_trial(first_point)
    results: list[TrialResult] = []
    best: TrialResult | None = None

    def on_report(r: TrialResult) -> None:
        leader = best if best is not None and best.value >= r.value else r
        if reserve is not None:
            budget.reserve = reserve(leader)

    while (cfg.n_trials is None or len(results) < cfg.n_trials) and not budget.expired():
        trial = study.ask()
        result = TrialResult(number=trial.number, params=suggest(trial, cfg.space))
        reporter = Reporter(trial, result, cfg, budget, on_report)
        with child_run(trial.number, result.params) if child_run is not None else contextlib.nullcontext() as run:
            result.run_id = getattr(getattr(run, "info", None), "run_id", None)
            with contextlib.suppress(TrialStopped):
                fit(result.params, reporter)
            if result.steps == 0:  # the budget ran out before its first evaluation
                result.state = "failed"
            if trial_done is not None:
                trial_done(result)
        results.append(result)
        if result.state == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if result.state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, result.value)
        if best is None or result.value > best.value:
            best = result
        if reserve is not None:
            budget.reserve = reserve(best)
        log(f"trial {result.number:3d} | {result.state:8s} | valid {result.value:.4f} at eval {result.best_step}"
            f"/{result.steps} | {result.seconds + result.eval_seconds:6.1f} s | {format_point(result.params)}"
            f" | {budget.elapsed() / 60:.1f} min")
    stopped_by = "trial limit" if cfg.n_trials is not None and len(results) >= cfg.n_trials else "budget"
    log(f"search stopped by the {stopped_by} after {len(results)} trials, {budget.elapsed() / 60:.1f} min")
    if best is None:
        raise RuntimeError("the search budget ran out before any trial finished an evaluation: "
                           "raise --max-minutes or shrink the space")
    return best, results


def format_point(point: dict[str, Any]) -> str:
    """``key=value`` pairs, floats with 3 significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


@contextlib.contextmanager
def mlflow_child(experiment: str, name: str, params: dict[str, Any], tags: dict[str, Any],
                 **kwargs: Any) -> Iterator[Any]:
    """A nested MLflow run (``recsys.tracking.start_run(nested=True)``) for one trial."""
    from recsys.tracking import start_run

    with start_run(experiment, name, params=params, tags=tags, nested=True, **kwargs) as run:
        yield run
