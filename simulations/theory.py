"""Counterfactual success S(alpha) of an ideal firm, and the erasure bound of Hardt et al.

Hardt, Mazumdar, Mendler-Dünner and Zrnic ("Algorithmic Collective Action in Machine
Learning", ICML 2023, Section 3, *erasing signals*) bound how often a Bayes-optimal firm's
classifier f, trained on data in which a fraction alpha relabels itself, is invariant to a
signal g: S(alpha) = P[f(x) = f(g(x))]. Here g is the counterfactual map x -> x_{A<-0} and
the collective is a fraction alpha of the minority. Their argument, transcribed to this
setting (the inequality is proved in ``docs/datasets.md``, synthetic section):

* the firm is Bayes-optimal and sees ``a`` (so the minority slice is its own problem and the
  majority slice, which the collective never touches, gives f(x_{A<-0}, 0) = 1{c(x) > 1/2}
  with c(x) = P(y=1 | x_{A<-0}));
* each member with y = 0 and c(x) > 1/2 reports y = 1 (the ``oracle`` method at the budget
  M* = the number of such candidates); members are drawn independently of (x, y);
* with q(x) = P(y=1 | x, a=1) and y*(x) = 1{c(x) > 1/2}, the gap
  Delta(x) = max(q, 1 - q) - P(y = y*(x) | x, a=1) is how far the minority's own label law
  at x is from the counterfactual Bayes label.

Then f(x, 1) = y*(x) exactly where (1 - alpha) * Delta(x) < alpha (when q <= c, as in both
synthetic models: label bias is a penalty), so

    S_Bayes(alpha) = P[(1 - alpha) Delta < alpha] >= 1 - (1 - alpha) / alpha * tau,  tau = E[Delta]

(Markov's inequality), the minority's expectation. The firms of the simulator are not
Bayes-optimal (finite data; logistic regression is misspecified on ``synthetic-nonlinear``),
which is Hardt et al.'s epsilon term, left out here: the bound is a reference line, not a
guarantee for a measured ``success`` column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Erasure", "bayes_erasure_success", "erasure", "erasure_gap", "hardt_erasure_bound"]


def _probabilities(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError(f"{name} must be a non-empty 1-D array of probabilities in [0, 1]")
    return arr


def _alphas(alpha: Any) -> np.ndarray:
    arr = np.asarray(alpha, dtype=np.float64)
    if not np.all((arr > 0) & (arr <= 1)):
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    return arr


def erasure_gap(proba: Any, cf_proba: Any) -> np.ndarray:
    """Delta per row: max(q, 1-q) minus the probability, under q, of the counterfactual
    Bayes label y* = 1{cf_proba > 1/2}; 0 where the row's own Bayes label is already y*."""
    q, c = _probabilities(proba, "proba"), _probabilities(cf_proba, "cf_proba")
    if q.shape != c.shape:
        raise ValueError("proba and cf_proba must have the same length")
    target = np.where(c > 0.5, q, 1.0 - q)
    return np.maximum(q, 1.0 - q) - target


def hardt_erasure_bound(alpha: Any, tau: float) -> np.ndarray | float:
    """1 - (1 - alpha) / alpha * tau, clipped at 0 (the erasure bound with epsilon = 0)."""
    if not (isinstance(tau, (int, float, np.floating)) and math.isfinite(tau) and 0 <= tau <= 1):
        raise ValueError(f"tau must be a number in [0, 1], got {tau!r}")
    a = _alphas(alpha)
    bound = np.maximum(0.0, 1.0 - (1.0 - a) / a * tau)
    return float(bound) if bound.ndim == 0 else bound


def bayes_erasure_success(alpha: Any, proba: Any, cf_proba: Any) -> np.ndarray | float:
    """S(alpha) of a Bayes-optimal firm that sees a, against the oracle's erasure: the share
    of rows where (1 - alpha) * Delta < alpha. Needs proba <= cf_proba where cf_proba <= 1/2
    (one-sided flips suffice), as in both synthetic models."""
    gap = erasure_gap(proba, cf_proba)
    q, c = np.asarray(proba, dtype=np.float64), np.asarray(cf_proba, dtype=np.float64)
    if np.any((c <= 0.5) & (q > 0.5)):
        raise ValueError("rows with cf_proba <= 1/2 < proba need 1 -> 0 flips, which the collective never makes")
    a = _alphas(alpha)
    success = np.mean((1.0 - a[..., None]) * gap < a[..., None], axis=-1)
    return float(success) if success.ndim == 0 else success


@dataclass(frozen=True)
class Erasure:
    """The erasure quantities of one synthetic draw (minority rows)."""

    tau: float  # E[Delta] over the minority
    budget: float  # M* / pool: the share of candidates with c > 1/2 (the oracle's erasure budget)
    gap: np.ndarray  # Delta per minority row
    proba: np.ndarray  # q = P(y=1 | x, a=1)
    cf_proba: np.ndarray  # c = P(y=1 | x_{A<-0})

    def bound(self, alpha: Any) -> np.ndarray | float:
        return hardt_erasure_bound(alpha, self.tau)

    def bayes_success(self, alpha: Any) -> np.ndarray | float:
        return bayes_erasure_success(alpha, self.proba, self.cf_proba)


def erasure(dataset: str = "synthetic-nonlinear", **options: Any) -> Erasure:
    """The erasure quantities of a synthetic data set's population (use a large ``n``).

    ``dataset`` is ``synthetic-nonlinear`` (options of :mod:`simulations.synthetic`) or
    ``synthetic``/``toy`` (the shift-only SCM; label bias constant).
    """
    from scipy.special import expit

    from .datasets import load_dataset

    if dataset == "synthetic-nonlinear":
        from .synthetic import draw_nonlinear

        w = draw_nonlinear(**options)
        a, y, q, c = w.a, w.y, w.proba, w.cf_proba
    elif dataset in ("synthetic", "toy"):
        from .datasets import _INTERCEPT, _SIGNAL

        data = load_dataset(dataset, **options)
        a, y, c = data.a, data.y, data.counterfactual_proba
        u = data.counterfactual_features.to_numpy()
        logit = u @ np.full(u.shape[1], _SIGNAL / math.sqrt(u.shape[1])) + _INTERCEPT  # as make_scm
        q = expit(logit - options.get("label_bias", 1.5) * a)
    else:
        raise ValueError(f"erasure needs a synthetic dataset, not {dataset!r}")
    m = a == 1
    candidates = m & (y == 0)
    budget = float(np.count_nonzero(candidates & (c > 0.5)) / max(1, np.count_nonzero(candidates)))
    gap = erasure_gap(q[m], c[m])
    return Erasure(tau=float(gap.mean()), budget=budget, gap=gap, proba=q[m], cf_proba=c[m])
