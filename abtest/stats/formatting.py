"""How every figure of the A/B layer is written in words: percentages, intervals and p-values.

One place, so the summaries of :mod:`abtest.stats.results`, the sequential test and the report agree on
rounding and on what a missing number looks like. A NaN prints as ``n/a``; a relative lift whose control is
zero prints as :data:`NOT_ESTIMABLE`; an infinite interval bound (Fieller's interval when the control
mean is not distinguishable from zero) makes the interval ``unbounded``.
"""

from __future__ import annotations

import math

__all__ = ["NOT_ESTIMABLE", "format_pct", "format_interval", "format_relative", "format_p", "format_number"]

#: What a relative change is when the control is zero (the ratio has no value).
NOT_ESTIMABLE = "not estimable (control is zero)"


def format_pct(x: float, sign: str = "") -> str:
    """``0.0412`` -> ``4.1%`` (``sign="+"`` forces the sign); ``-0.0%`` prints as ``0.0%``; NaN or
    infinite -> ``n/a``."""
    if not math.isfinite(x):
        return "n/a"
    value = round(100 * x, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:{sign}.1f}%"


def format_number(x: float, sign: str = "") -> str:
    """Four significant digits (``sign="+"`` forces the sign); NaN -> ``n/a``."""
    if math.isnan(x):
        return "n/a"
    return f"{x + 0.0:{sign}.4g}"


def format_interval(low: float, high: float, *, pct: bool = True, sign: str = "") -> str:
    """``[2.0%, 6.2%]`` (or ``[0.0123, 0.0456]`` with ``pct=False``); ``unbounded`` when a bound is
    infinite; ``n/a`` when a bound is NaN."""
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    if math.isinf(low) or math.isinf(high):
        return "unbounded"
    fmt = format_pct if pct else format_number
    return f"[{fmt(low, sign)}, {fmt(high, sign)}]"


def format_relative(rel_lift: float, rel_ci: tuple[float, float], sign: str = "+") -> str:
    """``+4.1% [+2.0%, +6.2%]``; :data:`NOT_ESTIMABLE` when the relative lift is NaN (zero control)."""
    if math.isnan(rel_lift):
        return NOT_ESTIMABLE
    return f"{format_pct(rel_lift, sign)} {format_interval(*rel_ci, sign=sign)}"


def format_p(p: float, *, label: bool = True) -> str:
    """``p = 0.0003`` style: two significant digits below 0.1, two decimals above, ``p < 0.0001`` for tiny
    values, ``p = n/a`` for NaN. ``label=False`` leaves out ``p`` and ``=`` (table cells: ``0.0003``,
    ``< 0.0001``)."""
    if math.isnan(p):
        text = "n/a"
    elif p < 1e-4:
        return "p < 0.0001" if label else "< 0.0001"
    else:
        text = f"{p:.2g}" if p < 0.1 else f"{p:.2f}"
    return f"p = {text}" if label else text
