"""``synthetic-nonlinear``: a structural causal model where the oracle matters.

In the ``synthetic`` SCM (``simulations.datasets.make_scm``) the minority's features are
the majority's shifted by a constant, so a classifier fitted on majority rows ranks the
minority's candidates almost exactly like their true counterfactual probability (Spearman
~0.999) and ``rb-prob`` cannot be told apart from ``oracle``. Here the sensitive attribute
acts on each feature differently, non-linearly and through an interaction, and the label
bias depends on the person's features::

    A ~ Bernoulli(minority_fraction),  U ~ N(0, I_d),  s(U) = (2 / sqrt(d)) * sum_j U_j
    majority (A = 0):  X = U
    minority (A = 1):  X_1 = U_1 - feature_shift                          shifted
                       X_2 = feature_scale * U_2                          rescaled (reversed if < 0)
                       X_3 = U_3 + interaction * tanh(U_1) * tanh(U_2)    interaction
                       X_4 = tanh(saturation * U_4) / saturation          saturates (U_4 if 0)
                       X_j = U_j for j >= 5
    P(Y = 1 | U, A) = sigmoid(s(U) - A * b(U)),  b(U) = label_bias * (1 + bias_slope * tanh(U_1))

so ``x_{A<-0} = U`` and ``P(y = 1 | x_{A<-0}) = sigmoid(s(U))`` exactly, and for majority rows
the counterfactual equals the observation. ``b >= 0`` everywhere (``label_bias >= 0``,
``|bias_slope| <= 1``): the minority's labels are never better than its counterfactual ones.
With ``feature_scale != 0`` the minority's map U -> X is one to one, so P(y=1 | x, a) is the
per-person ``proba`` of :class:`Draw` (what :mod:`simulations.theory` needs).

Randomness: the one ``random_state`` is spawned into three independent streams (group,
attributes, labels), never a global generator; an int or ``SeedSequence`` always gives the
same data, a ``Generator`` is spawned (``Generator.spawn``) like any consumer of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from agents.errors import ConfigError

from .datasets import _MAX_FEATURES, _MAX_ROWS, _MAX_VALUES, Dataset, _as_generator, _number

__all__ = ["DEFAULTS", "NAME", "OPTIONS", "Draw", "draw_nonlinear", "label_bias", "load_nonlinear",
           "make_nonlinear_scm", "minority_features"]

NAME = "synthetic-nonlinear"
DEFAULTS = {
    "n": 20_000,
    "n_features": 5,
    "minority_fraction": 0.3,
    "feature_shift": 1.0,
    "feature_scale": -1.0,
    "interaction": 1.0,
    "saturation": 1.0,
    "label_bias": 1.5,
    "bias_slope": 0.5,
}
OPTIONS = (*DEFAULTS, "random_state")
STREAMS = ("group", "attributes", "labels")  # spawn order: A, U, Y
_SIGNAL = 2.0  # as the shift-only SCM: w = 2/sqrt(d) * 1, so s(U) ~ N(0, 4)


@dataclass(frozen=True, eq=False)
class Draw:
    """One draw of the model, latent variables included.

    ``proba`` is P(y=1 | U, A) (= P(y=1 | x, a), the map being one to one per group) and
    ``cf_proba`` is P(y=1 | x_{A<-0}) = sigmoid(s(U)); ``y`` was drawn from ``proba``.
    """

    u: np.ndarray
    a: np.ndarray
    x: np.ndarray
    y: np.ndarray
    proba: np.ndarray
    cf_proba: np.ndarray
    options: dict


def minority_features(u: np.ndarray, *, feature_shift: float, feature_scale: float, interaction: float,
                      saturation: float) -> np.ndarray:
    """X = phi(U) for minority rows (``u`` is (rows, d), d >= 4); a new array."""
    u = np.asarray(u, dtype=np.float64)
    x = u.copy()
    x[:, 0] = u[:, 0] - feature_shift
    x[:, 1] = feature_scale * u[:, 1]
    x[:, 2] = u[:, 2] + interaction * np.tanh(u[:, 0]) * np.tanh(u[:, 1])
    if saturation > 0:
        x[:, 3] = np.tanh(saturation * u[:, 3]) / saturation
    return x


def label_bias(u: np.ndarray, *, label_bias: float, bias_slope: float) -> np.ndarray:
    """b(U) = label_bias * (1 + bias_slope * tanh(U_1)): the minority's log-odds penalty."""
    return label_bias * (1.0 + bias_slope * np.tanh(np.asarray(u, dtype=np.float64)[:, 0]))


def _options(options: dict) -> dict:
    """Defaults filled in, every option checked (one-line ConfigError naming what is allowed)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for dataset {NAME!r}; "
                          f"allowed: {', '.join(OPTIONS)}")
    o = {**DEFAULTS, **{k: v for k, v in options.items() if k != "random_state"}}
    n = _number("n", o["n"], f"an integer from 10 to {_MAX_ROWS:_}", integer=True,
                ok=lambda v: 10 <= v <= _MAX_ROWS)
    d = _number("n_features", o["n_features"], f"an integer from 4 to {_MAX_FEATURES} (x1..x4 have roles)",
                integer=True, ok=lambda v: 4 <= v <= _MAX_FEATURES)
    if n * d > _MAX_VALUES:
        raise ConfigError(f"options n={n} and n_features={d} ask for {n * d:_} feature values; allowed: "
                          f"n * n_features <= {_MAX_VALUES:_} (8 GB of float64)")
    return {
        "n": n,
        "n_features": d,
        "minority_fraction": _number("minority_fraction", o["minority_fraction"],
                                     "a number strictly between 0 and 1", ok=lambda v: 0 < v < 1),
        "feature_shift": _number("feature_shift", o["feature_shift"], "a finite number"),
        "feature_scale": _number("feature_scale", o["feature_scale"],
                                 "a finite non-zero number (0 would make x2 carry nothing)", ok=lambda v: v != 0),
        "interaction": _number("interaction", o["interaction"], "a finite number"),
        "saturation": _number("saturation", o["saturation"], "a finite number >= 0 (0: x4 = u4)",
                              ok=lambda v: v >= 0),
        "label_bias": _number("label_bias", o["label_bias"], "a finite number >= 0", ok=lambda v: v >= 0),
        "bias_slope": _number("bias_slope", o["bias_slope"], "a number from -1 to 1 (so that b(U) >= 0)",
                              ok=lambda v: -1 <= v <= 1),
    }


def _streams(random_state: Any) -> list[np.random.Generator]:
    """The three streams of one random_state (int, SeedSequence or Generator)."""
    if isinstance(random_state, np.random.Generator):
        return random_state.spawn(len(STREAMS))
    _as_generator(random_state)  # validates: a one-line ConfigError otherwise
    seq = (random_state if isinstance(random_state, np.random.SeedSequence)
           else np.random.SeedSequence(int(random_state)))
    # The children SeedSequence.spawn would give first, without advancing the caller's sequence.
    return [np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, i),
                                                         pool_size=seq.pool_size))
            for i in range(len(STREAMS))]


def draw_nonlinear(*, random_state: Any = 0, **options: Any) -> Draw:
    """Draw the model with its latent variables (options: :data:`OPTIONS`, defaults :data:`DEFAULTS`)."""
    o = _options(options)
    n, d = o["n"], o["n_features"]
    group, attributes, labels = _streams(random_state)
    a = (group.random(n) < o["minority_fraction"]).astype(np.int8)
    u = attributes.standard_normal((n, d))
    s = u @ np.full(d, _SIGNAL / math.sqrt(d))
    minority = a == 1
    x = u.copy()  # majority rows keep x == u bit for bit
    x[minority] = minority_features(u[minority], feature_shift=o["feature_shift"],
                                    feature_scale=o["feature_scale"], interaction=o["interaction"],
                                    saturation=o["saturation"])
    bias = np.zeros(n)
    bias[minority] = label_bias(u[minority], label_bias=o["label_bias"], bias_slope=o["bias_slope"])
    proba = expit(s - bias)
    y = (labels.random(n) < proba).astype(np.int8)
    return Draw(u=u, a=a, x=x, y=y, proba=proba, cf_proba=expit(s), options=o)


def make_nonlinear_scm(*, random_state: Any = 0, **options: Any) -> Dataset:
    """The ``synthetic-nonlinear`` data set: features, a, y and the exact counterfactuals."""
    w = draw_nonlinear(random_state=random_state, **options)
    o = w.options
    columns = [f"x{j + 1}" for j in range(o["n_features"])]
    settings = ", ".join(f"{k}={v}" for k, v in o.items())
    return Dataset(
        name=NAME,
        features=pd.DataFrame(w.x, columns=columns),
        a=w.a,
        y=w.y,
        sensitive="a",
        categorical=(),
        numerical=tuple(columns),
        counterfactual_features=pd.DataFrame(w.u, columns=columns),
        counterfactual_proba=w.cf_proba,
        description=(
            f"Non-linear synthetic SCM: {settings}; minority x1 = u1 - shift, x2 = scale*u2, "
            f"x3 = u3 + interaction*tanh(u1)*tanh(u2), x4 = tanh(saturation*u4)/saturation; "
            f"Y ~ Bern(sigmoid({_SIGNAL}/sqrt(d)*sum(U) - A*label_bias*(1 + bias_slope*tanh(u1))))"
        ),
        source="generated by collective-fairness (simulations.synthetic)",
    )


def load_nonlinear(**options: Any) -> Dataset:
    """``load_dataset("synthetic-nonlinear", **options)``: the registry's entry point."""
    return make_nonlinear_scm(**options)
