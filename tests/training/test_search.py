"""training/search.py on synthetic objectives: budget, pruning, early stopping, reproducibility."""

from __future__ import annotations

import math
import time

import pytest

from training.search import Budget, Range, SearchConfig, TrialResult, run_search


def _quadratic_fit(calls: list | None = None, seconds_per_eval: float = 0.0):
    """A trial whose validation "recall" rises with epochs towards a ceiling set by lr (best at 1e-2)."""

    def fit(point, reporter):
        if calls is not None:
            calls.append(dict(point))
        ceiling = 1.0 - (math.log10(point["lr"]) + 2.0) ** 2 / 4.0
        for epoch in range(1, 100):
            if seconds_per_eval:
                time.sleep(seconds_per_eval)
            reporter.report(ceiling * (1.0 - 0.5**epoch), train_seconds=seconds_per_eval)

    return fit


SPACE = {"lr": Range(low=1e-4, high=1.0), "dim": [8, 16]}


def test_same_seed_same_trials_and_winner():
    cfg = SearchConfig(n_trials=12, seed=3, startup_trials=4, patience=2, max_evals=8, space=SPACE)
    runs = []
    for _ in range(2):
        winner, trials = run_search(cfg, Budget(None), _quadratic_fit(), log=lambda m: None)
        runs.append(([(t.params, t.value, t.state, t.steps) for t in trials], winner.number))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 12
    _, other = run_search(cfg.model_copy(update={"seed": 4}), Budget(None), _quadratic_fit(), log=lambda m: None)
    assert [t.params for t in other] != [p for p, *_ in runs[0][0]]  # the seed is what fixes the trials


def test_asha_prunes_and_the_winner_is_the_best_validation_value():
    cfg = SearchConfig(n_trials=15, seed=0, startup_trials=15, reduction_factor=3, patience=50, max_evals=9,
                       space=SPACE)
    winner, trials = run_search(cfg, Budget(None), _quadratic_fit(), log=lambda m: None)
    states = [t.state for t in trials]
    assert "pruned" in states and "complete" in states  # rungs stop some, others run to max_evals
    assert all(t.steps <= 9 for t in trials)
    assert winner.value == max(t.value for t in trials)
    assert winner.best_step == winner.curve.index(winner.value) + 1


def test_early_stopping_after_patience_evaluations():
    def fit(point, reporter):
        for value in (0.1, 0.3, 0.2, 0.2, 0.2, 0.9):  # the 0.9 must never be seen (patience 3)
            reporter.report(value, train_seconds=0.0)

    cfg = SearchConfig(n_trials=1, patience=3, space=SPACE)
    winner, (trial,) = run_search(cfg, Budget(None), fit, log=lambda m: None)
    assert (trial.state, trial.steps, trial.best_step, trial.value) == ("stopped", 5, 2, 0.3)


def test_the_budget_stops_the_search_mid_trial_and_keeps_the_reserve_free():
    cfg = SearchConfig(seed=0, patience=100, max_evals=1000, space=SPACE)  # no trial limit: the budget ends it
    budget = Budget(1.5)
    t0 = time.monotonic()
    winner, trials = run_search(cfg, budget, _quadratic_fit(seconds_per_eval=0.02),
                                reserve=lambda r: 0.5, log=lambda m: None)
    spent = time.monotonic() - t0
    assert spent <= 1.5 - 0.5 + 0.1  # stopped at the first report past (budget - reserve)
    assert trials[-1].state in ("budget", "failed") and budget.expired()
    assert isinstance(winner, TrialResult) and winner.steps >= 1


def test_no_evaluation_within_the_budget_is_a_clear_error():
    cfg = SearchConfig(space=SPACE)
    with pytest.raises(RuntimeError, match="budget ran out before any trial"):
        run_search(cfg, Budget(0.0), _quadratic_fit(), log=lambda m: None)


def test_ranges_are_validated():
    with pytest.raises(ValueError, match="low"):
        Range(low=1.0, high=0.5)
    with pytest.raises(ValueError, match="log range needs low > 0"):
        Range(low=0.0, high=1.0)


def test_every_trial_runs_inside_its_child_run_and_is_reported():
    opened, done = [], []

    import contextlib

    @contextlib.contextmanager
    def child(number, point):
        opened.append(number)
        yield None

    cfg = SearchConfig(n_trials=3, startup_trials=3, patience=1, max_evals=2, space=SPACE)
    _, trials = run_search(cfg, Budget(None), _quadratic_fit(), child_run=child,
                           trial_done=lambda r: done.append((r.number, r.value)), log=lambda m: None)
    assert opened == [0, 1, 2] and done == [(t.number, t.value) for t in trials]


def test_the_first_point_is_trial_zero_then_the_sampler_takes_over():
    calls: list = []
    cfg = SearchConfig(n_trials=4, seed=0, startup_trials=2, patience=2, max_evals=4, space=SPACE)
    first = {"lr": 0.0123, "dim": 16}
    _, trials = run_search(cfg, Budget(None), _quadratic_fit(calls), log=lambda m: None, first_point=first)
    assert calls[0] == first and trials[0].params == first
    assert all(c != first for c in calls[1:])  # the sampler's own points follow
    _, plain = run_search(cfg, Budget(None), _quadratic_fit(), log=lambda m: None)
    assert plain[0].params != first


def test_a_first_point_outside_the_space_is_refused():
    cfg = SearchConfig(n_trials=2, space=SPACE)
    with pytest.raises(ValueError, match=r"dim=32 is outside search.space.dim"):
        run_search(cfg, Budget(None), _quadratic_fit(), log=lambda m: None, first_point={"lr": 0.01, "dim": 32})
    with pytest.raises(ValueError, match=r"lr=2.0 is outside search.space.lr"):
        run_search(cfg, Budget(None), _quadratic_fit(), log=lambda m: None, first_point={"lr": 2.0, "dim": 8})


def test_a_rung_compares_the_best_value_so_far_not_the_latest():
    # Trial 0 rises to 0.5 and stays; trial 1 peaks at 0.8 and dips to 0.4 at the rung (eval 3). Its
    # value is 0.8 (what its refit would train to), so the rung must keep it.
    curves = iter([[0.1, 0.3, 0.5, 0.5, 0.5], [0.2, 0.8, 0.4, 0.4, 0.4]])

    def fit(point, reporter):
        for v in next(curves):
            reporter.report(v, train_seconds=0.0)

    cfg = SearchConfig(n_trials=2, seed=0, startup_trials=2, min_resource=3, reduction_factor=2, patience=50,
                       max_evals=5, space=SPACE)
    winner, trials = run_search(cfg, Budget(None), fit, log=lambda m: None)
    assert trials[1].state != "pruned" and trials[1].steps == 5
    assert winner.number == 1 and winner.value == 0.8
