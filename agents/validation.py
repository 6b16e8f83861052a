"""Checks every party makes of what it is handed: 0/1 arrays and seeds.

One place for each rule, at the bottom of the import graph (like
:mod:`agents.errors`), so a device, the firm and the simulator accept and
reject the same inputs with the same message.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

__all__ = ["as_binary", "is_binary", "is_number_text", "stream_int"]


def is_binary(values) -> bool:
    """Whether ``values`` are numbers (or bools) that are all 0 or 1 (NaN is not)."""
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind == "b":
        return True
    if kind in "iu":  # min/max are cheaper than elementwise tests (hot path: metrics)
        return arr.size == 0 or bool(arr.min() >= 0 and arr.max() <= 1)
    if kind == "f":
        return bool(np.all((arr == 0) | (arr == 1)))  # NaN fails both
    return False


def is_number_text(text: str) -> bool:
    """Whether a text cell of a data file reads as a number (as ``float`` reads it: "1e3",
    " 7 ", "nan" and "inf" do; "12 years" does not)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_binary(values, name: str) -> np.ndarray:
    """``values`` as a 1-D array of 0/1 (a one-column matrix is accepted), else a
    :class:`DataError` naming ``name`` and what was found."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric with values in {{0, 1}}, got dtype {arr.dtype}")
    if not is_binary(arr):
        bad = arr[(arr != 0) & (arr != 1)]
        raise DataError(f"{name} must contain only 0 and 1, found {np.unique(bad)[:5].tolist()}")
    return arr


def stream_int(seq: np.random.SeedSequence, *, bits: int = 31) -> int:
    """An int seed in [0, 2**bits) drawn from a random stream, for APIs that want an
    int (scikit-learn, fairlearn); the same stream always gives the same int."""
    return int(seq.generate_state(1)[0]) % 2**bits
