"""What the collective knows of the majority, and how that knowledge travels.

For ``rb-prob`` it is the fitted classifier's parameters (a few numbers), for
the neighbour methods the majority reference rows themselves. The coordinator
turns its reference rows into plain arrays (one Flower ``ArrayRecord``); users
rebuild the fitted scorers from them and score themselves locally, so a score
depends only on the user's own features and this knowledge.
"""

from __future__ import annotations

import hashlib

import numpy as np

# scikit-learn is imported only where a scorer is built: on a device every
# message is a fresh process, and the join and report steps need no scorer.

__all__ = ["knowledge_digest", "knowledge_from_reference", "scorers_from_knowledge"]


def knowledge_from_reference(methods, X_ref, y_ref, *, params: dict | None = None) -> dict[str, np.ndarray]:
    """The collective's knowledge for ``methods`` from its majority reference rows.

    Keys are ``<method>/<part>``; every value is a plain array, so the knowledge
    travels as one Flower ``ArrayRecord``.
    """
    from sklearn.linear_model import LogisticRegression

    from .scoring import RBProb

    X_ref = np.asarray(X_ref, dtype=np.float64)
    y_ref = np.asarray(y_ref).astype(np.int8)
    out: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "rb-prob":
            scorer = RBProb().fit(X_ref, y_ref)
            est = scorer.estimator_
            if est is None:  # one class only: a constant score
                out["rb-prob/constant"] = scorer.classes_seen_.astype(np.float64)
            elif isinstance(est, LogisticRegression):
                out["rb-prob/coef"] = est.coef_
                out["rb-prob/intercept"] = est.intercept_
                out["rb-prob/classes"] = est.classes_
            else:  # a classifier we cannot rebuild from parameters: ship the rows
                out["rb-prob/X"], out["rb-prob/y"] = X_ref, y_ref
        elif method == "rb-label":
            out["rb-label/X"], out["rb-label/y"] = X_ref, y_ref
        elif method == "rb-dist":
            positives = y_ref == 1
            out["rb-dist/X"], out["rb-dist/y"] = X_ref[positives], y_ref[positives]
        # random and oracle need nothing from the majority
    for method in methods:  # each method's own parameters, e.g. rb-dist/k
        for name, value in (params or {}).get(method, {}).items():
            out[f"{method}/param/{name}"] = np.array([value])
    return out


def knowledge_digest(knowledge: dict[str, np.ndarray]) -> str:
    """A content hash, so users can cache the scorers rebuilt from the knowledge."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(knowledge):
        arr = np.ascontiguousarray(knowledge[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def scorers_from_knowledge(methods, knowledge: dict[str, np.ndarray]) -> dict:
    """Fitted scorers, one per method, rebuilt from the knowledge."""
    from sklearn.linear_model import LogisticRegression

    from .scoring import RBProb, make_scorer

    dummy_X, dummy_y = np.zeros((1, 1)), np.zeros(1, dtype=np.int8)
    out = {}
    for method in methods:
        prefix = f"{method}/param/"
        params = {key[len(prefix):]: np.asarray(value).ravel()[0].item() for key, value in knowledge.items()
                  if key.startswith(prefix)}
        if method == "rb-prob" and "rb-prob/coef" in knowledge:
            est = LogisticRegression(solver="newton-cholesky", max_iter=1000)
            est.coef_ = np.asarray(knowledge["rb-prob/coef"], dtype=np.float64)
            est.intercept_ = np.asarray(knowledge["rb-prob/intercept"], dtype=np.float64)
            est.classes_ = np.asarray(knowledge["rb-prob/classes"])
            est.n_features_in_ = est.coef_.shape[1]
            scorer = RBProb()
            scorer.classes_seen_, scorer.estimator_ = est.classes_, est
        elif method == "rb-prob" and "rb-prob/constant" in knowledge:
            scorer = RBProb()
            scorer.classes_seen_ = np.asarray(knowledge["rb-prob/constant"]).astype(np.int8)
            scorer.estimator_ = None
        elif f"{method}/X" in knowledge:
            scorer = make_scorer(method, **params).fit(knowledge[f"{method}/X"], knowledge[f"{method}/y"])
        else:  # random, oracle: fit only checks its input
            scorer = make_scorer(method, **params).fit(dummy_X, dummy_y)
        out[method] = scorer
    return out
