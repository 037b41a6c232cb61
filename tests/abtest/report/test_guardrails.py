"""Guardrails on latency and error rate."""

from __future__ import annotations

import pytest

from abtest.report.guardrails import check_guardrails


def test_all_within_limits():
    result = check_guardrails({"mf": 80.0, "gnn": 95.0}, {"mf": 0.001, "gnn": 0.002})
    assert result.ok and result.status == "OK" and "all guardrails hold" in result.explanation


def test_absolute_limits_violated():
    result = check_guardrails({"mf": 80.0, "gnn": 250.0}, {"mf": 0.02, "gnn": 0.0}, max_latency_p99_ms=200)
    assert not result.ok and result.status == "VIOLATED"
    assert len(result.violations) == 2
    assert "gnn p99 latency 250 ms exceeds the 200 ms limit" in result.explanation
    assert "mf error rate 2.00% exceeds the 1.00% limit" in result.explanation


def test_relative_latency_against_control():
    result = check_guardrails(
        {"mf": 80.0, "gnn": 110.0}, {"mf": 0.0, "gnn": 0.0}, control="mf", max_latency_increase=0.25
    )
    assert not result.ok and "gnn p99 latency is 38% above mf" in result.explanation
    ok = check_guardrails({"mf": 80.0, "gnn": 90.0}, {"mf": 0.0, "gnn": 0.0}, control="mf", max_latency_increase=0.25)
    assert ok.ok


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ"):
        check_guardrails({"mf": 1.0}, {"gnn": 0.0})
    with pytest.raises(ValueError, match="needs control"):
        check_guardrails({"mf": 1.0}, {"mf": 0.0}, max_latency_increase=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_guardrails({"mf": 1.0}, {"mf": 2.0})
