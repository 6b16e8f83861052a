"""Backends: where a round's step runs.

``vectorised`` runs the step over every user at once in this process
(:mod:`simulations.engine`); ``flower`` runs the user half inside Flower
ClientApps, K users per node, and the firm in a Flower ServerApp
(:mod:`simulations.flower`). Both return the same tidy rows for the same seed.
A backend is chosen by name from ``[engine] backend``; its module is imported
only when it is used (Flower and Ray are heavy).
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

import pandas as pd

__all__ = ["BACKENDS", "Backend", "close_backends", "get_backend"]

# name -> "module:attribute" of an object with the Backend interface.
BACKENDS = {
    "vectorised": "simulations.engine:BACKEND",
    "flower": "simulations.flower.backend:BACKEND",
}


class Backend(Protocol):
    """Runs one seed of a scenario and returns its rows (one per cell, plus the base row)."""

    name: str
    supports_comparison: bool  # firm-side baselines and defences ([baselines], [defence])

    def run_seed(self, scenario, seed: int, *, dataset=None, executor=None,
                 on_fit: Callable[[int], None] | None = None, progress: bool = False) -> pd.DataFrame:
        """``on_fit(n)`` counts finished fits; ``progress`` lets the backend say more (per round)."""


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def close_backends() -> None:
    """Stop whatever the loaded backends started (SuperLinks, Ray clusters); safe to call twice."""
    import sys

    for target in BACKENDS.values():
        module = sys.modules.get(target.partition(":")[0])
        close = getattr(module, "close_sessions", None)
        if close is not None:
            close()
