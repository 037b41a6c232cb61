"""Guardrails: operational limits an arm must respect whatever its click-through.

:func:`check_guardrails` compares each arm's latency p99 and error rate with absolute thresholds and,
optionally, with the control arm (a treatment may not be more than ``max_latency_increase`` slower at
p99 than control). It returns a :class:`GuardrailResult` whose ``ok`` is False when any limit is
violated and whose ``explanation`` says which arm broke which limit, in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["GuardrailResult", "check_guardrails"]


@dataclass(frozen=True)
class GuardrailResult:
    """``ok`` is True when no limit is violated; ``violations`` lists one sentence per broken limit."""

    ok: bool
    violations: tuple[str, ...]
    checked: tuple[str, ...]

    @property
    def status(self) -> str:
        return "OK" if self.ok else "VIOLATED"

    @property
    def explanation(self) -> str:
        if self.ok:
            return "all guardrails hold: " + "; ".join(self.checked)
        return "guardrail violated: " + "; ".join(self.violations)


def check_guardrails(
    latency_p99_ms: Mapping[str, float],
    error_rate: Mapping[str, float],
    *,
    max_latency_p99_ms: float = 200.0,
    max_error_rate: float = 0.01,
    control: str | None = None,
    max_latency_increase: float | None = None,
) -> GuardrailResult:
    """Check each arm's p99 latency and error rate against limits.

    Args:
        latency_p99_ms (Mapping[str, float]): p99 request latency per arm, in milliseconds.
        error_rate (Mapping[str, float]): Share of failed requests per arm, in ``[0, 1]``.
        max_latency_p99_ms (float, optional): Absolute p99 limit for every arm. (default: 200.0)
        max_error_rate (float, optional): Absolute error-rate limit for every arm. (default: 0.01)
        control (str, optional): Control arm, for the relative latency check. (default: None)
        max_latency_increase (float, optional): Largest allowed relative p99 increase of any arm over
            ``control`` (0.2 = 20% slower). Needs ``control``. (default: None)
    """
    if set(latency_p99_ms) != set(error_rate):
        raise ValueError(f"latency arms {sorted(latency_p99_ms)} differ from error-rate arms {sorted(error_rate)}")
    if max_latency_increase is not None and (control is None or control not in latency_p99_ms):
        raise ValueError("max_latency_increase needs control to name one of the arms")
    violations: list[str] = []
    checked: list[str] = []
    for arm in sorted(latency_p99_ms):
        latency, errors = float(latency_p99_ms[arm]), float(error_rate[arm])
        if not 0 <= errors <= 1:
            raise ValueError(f"error rate of {arm} must be in [0, 1], got {errors}")
        if latency > max_latency_p99_ms:
            violations.append(f"{arm} p99 latency {latency:.0f} ms exceeds the {max_latency_p99_ms:.0f} ms limit")
        if errors > max_error_rate:
            violations.append(f"{arm} error rate {errors:.2%} exceeds the {max_error_rate:.2%} limit")
        checked.append(f"{arm} p99 {latency:.0f} ms, errors {errors:.2%}")
        if max_latency_increase is not None and arm != control:
            base = float(latency_p99_ms[control])
            increase = latency / base - 1 if base > 0 else float("inf")
            if increase > max_latency_increase:
                violations.append(
                    f"{arm} p99 latency is {increase:.0%} above {control} ({latency:.0f} vs {base:.0f} ms; "
                    f"limit {max_latency_increase:.0%})"
                )
    return GuardrailResult(ok=not violations, violations=tuple(violations), checked=tuple(checked))
