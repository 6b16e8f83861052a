"""Confidence intervals over seeds: the Student-t 95% interval of a mean.

Seeds are the independent replications of an experiment (a new split, new
membership and tie tickets, a new firm seed), so every mean over seeds gets
the t interval ``mean ± t(0.975, n-1) · sd / sqrt(n)``. With one seed there is
no interval (``lo`` and ``hi`` are NaN, never a zero-width band). Comparisons
are *paired*: the difference is taken per seed first (same split, same
collective), then summarised, which removes the seed-to-seed swing both sides
share.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["LEVEL", "Interval", "interval_text", "paired", "summarise", "t_interval", "interval_note"]

LEVEL = 0.95


def interval_note(n: int) -> str:
    """How the intervals were computed, for table headings and figure captions."""
    return f"mean [95% CI, t over {n} seed{'s' if n != 1 else ''}]" if n > 1 else "mean of 1 seed (no interval)"


class Interval(NamedTuple):
    mean: float
    lo: float
    hi: float
    n: int


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean and Student-t ``level`` interval of the finite ``values`` (NaN bounds when n < 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, np.nan, np.nan, n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def summarise(frame: pd.DataFrame, by: list[str], value: str, *, scale: float = 1.0) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``lo``, ``hi`` and ``n`` of ``value`` (times ``scale``) over rows (seeds)."""
    rows = []
    for key, g in frame.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **t_interval(scale * g[value].to_numpy(dtype=float))._asdict()})
    return pd.DataFrame(rows, columns=[*by, "mean", "lo", "hi", "n"])


def paired(left: pd.DataFrame, right: pd.DataFrame, on: list[str], value: str) -> pd.DataFrame:
    """Per row of ``left``: ``diff`` = its ``value`` minus ``right``'s on the same ``on`` keys (inner join)."""
    r = right[on + [value]].rename(columns={value: "_right"})
    out = left.merge(r, on=on, how="inner")
    return out.assign(diff=out[value] - out["_right"]).drop(columns="_right")


def interval_text(mean: float, lo: float, hi: float, fmt: str = ".3f", *, scale: float = 1.0) -> str:
    """``"0.033 [0.024, 0.042]"``; the mean alone when there is no interval; ``"–"`` when there is no value."""
    if not np.isfinite(mean):
        return "–"
    text = _number(scale * mean, fmt)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{_number(scale * lo, fmt)}, {_number(scale * hi, fmt)}]"
    return text


def _number(x: float, fmt: str) -> str:
    """``x`` formatted, without the sign of a negative number that rounds to zero ("-0.000")."""
    text = format(x, fmt)
    if text.startswith("-") and text[1:].strip("0.") == "":
        text = ("+" if fmt.startswith("+") else "") + text[1:]
    return text
