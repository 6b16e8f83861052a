"""The vectorised engine: every user of a scenario decided in one numpy pass.

For each seed the engine builds a :class:`World` (split, preprocessing,
per-user tickets, the majority reference the collective sees), scores the
minority once per method, applies the coalition rule for every
(alpha, budget) cell, and lets the firm train on each distinct label vector.

Speed comes from doing each piece of work once: encodings and scores are
shared by all cells of a seed, identical label vectors are trained once, and
along each (method, alpha) chain the firm warm-starts from the previous
budget's solution (same optimum, a few Newton steps), chains running in
parallel processes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import sparse
from threadpoolctl import threadpool_limits

from agents.decision import (
    budget_count,
    coalition_threshold,
    decide,
    member_count,
    membership_cutoff,
    relabel,
    stream_key,
    user_tickets,
)
from agents.scoring import make_scorer
from server.firm import Firm, make_estimator
from server.metrics import counterfactual_metrics, fairness_metrics

from .datasets import Dataset, Prepared, load_dataset, prepare
from .scenario import Scenario

__all__ = [
    "Cell", "TestSet", "World", "build_world", "candidate_scores", "evaluate", "firm_design", "load_data",
    "plan_cells", "run_scenario", "run_seed", "seed_streams", "train_cells",
]

BASE = "base"  # method name of the row where nobody relabels


@dataclass(frozen=True)
class World:
    """Everything one seed of a scenario shares across its cells."""

    seed: int
    prepared: Prepared
    user_ids: np.ndarray  # training users' ids (dataset row positions)
    member_tickets: np.ndarray  # decides who joins the collective (nested in alpha)
    tie_tickets: np.ndarray  # breaks score ties in the coalition rule
    reference: np.ndarray  # training rows of the majority the collective sees
    firm_seed: int

    @property
    def minority(self) -> np.ndarray:
        return self.prepared.a_train == 1


@dataclass(frozen=True)
class Cell:
    """One (method, alpha, budget) configuration of a seed, decided."""

    method: str
    alpha: float
    budget: float | int
    n_members: int
    pool_size: int
    m: int
    threshold: float
    flips: np.ndarray  # bool mask over training users

    @property
    def n_flips(self) -> int:
        return int(self.flips.sum())

    def columns(self) -> dict:
        return cell_columns(self.method, self.alpha, self.budget, n_members=self.n_members,
                            pool_size=self.pool_size, m=self.m, flips=self.n_flips, threshold=self.threshold)


def cell_columns(method: str, alpha: float, budget, *, n_members: int = 0, pool_size: int = 0, m: int = 0,
                 flips: int = 0, threshold: float = np.nan) -> dict:
    """The result-table columns that describe one cell (every backend writes these)."""
    kind = "none" if method == BASE else "count" if isinstance(budget, int) else "fraction"
    return {"method": method, "alpha": alpha, "budget": float(budget), "budget_kind": kind, "n_members": n_members,
            "pool_size": pool_size, "m": m, "flips": flips, "threshold": threshold}


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """The run's independent random streams, spawned from its one seed.

    New streams are appended: a SeedSequence's i-th child does not depend on
    how many are spawned, so the existing streams stay the same.
    """
    names = ("split", "membership", "ties", "reference", "firm",
             "baselines", "defence", "trusted", "adaptive")  # the last four: simulations.comparison
    return dict(zip(names, np.random.SeedSequence(seed).spawn(len(names))))


def load_data(scenario: Scenario, *, seed: int | None = None) -> Dataset:
    """The scenario's dataset (synthetic ones are drawn from the seed)."""
    cfg = scenario.data
    options = dict(cfg.options)
    if cfg.dataset in ("synthetic", "toy") and "random_state" not in options:
        options["random_state"] = 0 if seed is None else seed
    return load_dataset(cfg.dataset, sensitive=cfg.sensitive, **options)


def build_world(scenario: Scenario, dataset: Dataset, seed: int) -> World:
    """Split, encode and draw the per-user tickets for one seed."""
    streams = seed_streams(seed)
    split_seed = int(streams["split"].generate_state(1)[0])
    prepared = prepare(
        dataset,
        test_size=scenario.data.test_size,
        include_sensitive=scenario.data.include_sensitive,
        random_state=split_seed,
    )
    user_ids = np.asarray(prepared.train_index, dtype=np.int64)
    majority = np.flatnonzero(prepared.a_train == 0)
    ref = scenario.collective.reference
    if ref != "all":
        rng = np.random.default_rng(streams["reference"])
        majority = np.sort(rng.choice(majority, size=min(ref, majority.size), replace=False))
    return World(
        seed=seed,
        prepared=prepared,
        user_ids=user_ids,
        member_tickets=user_tickets(user_ids, stream_key(streams["membership"])),
        tie_tickets=user_tickets(user_ids, stream_key(streams["ties"])),
        reference=majority,
        firm_seed=int(streams["firm"].generate_state(1)[0] % 2**31),
    )


def members(world: World, alpha: float) -> np.ndarray:
    """Mask of the collective at size ``alpha`` (nested: grows with alpha)."""
    minority = world.minority
    count = member_count(alpha, int(minority.sum()))
    return minority & (world.member_tickets < membership_cutoff(world.member_tickets[minority], count))


def candidate_scores(world: World, method: str, *, k: int = 10, alpha: float = 1.0) -> np.ndarray:
    """Scores of the candidates (members with y=0) of the collective at size ``alpha``
    (default: every minority user with y=0); NaN for everyone else. Collectives are
    nested, so the largest alpha of a grid scores every candidate of the grid."""
    p = world.prepared
    scorer = make_scorer(method, k=k).fit(p.X_train[world.reference], p.y_train[world.reference])
    candidates = np.flatnonzero(members(world, alpha) & (p.y_train == 0))
    scores = np.full(p.y_train.shape[0], np.nan)
    extra = {}
    if method == "oracle":
        extra["counterfactual_proba"] = p.cf_proba_train[candidates]
    scores[candidates] = scorer.score_samples(p.X_train[candidates], **extra)
    return scores


def plan_cells(world: World, method: str, scores: np.ndarray, alphas, budgets) -> Iterator[Cell]:
    """Apply the coalition rule for every (alpha, budget) of one method."""
    p = world.prepared
    for alpha in alphas:
        in_collective = members(world, alpha)
        pool = in_collective & (p.y_train == 0)
        pool_idx = np.flatnonzero(pool)
        for budget in budgets:
            m = budget_count(budget, pool_idx.size)
            threshold = coalition_threshold(scores[pool_idx], world.tie_tickets[pool_idx], m)
            flips = decide(scores, world.tie_tickets, threshold, eligible=pool)
            yield Cell(method, alpha, budget, int(in_collective.sum()), int(pool_idx.size), m, threshold.score, flips)


def evaluate(firm: Firm, prepared: "Prepared | TestSet") -> dict[str, float]:
    """The firm's test metrics; on synthetic data also counterfactual success."""
    pred = firm.predict(prepared.X_test)
    out = fairness_metrics(prepared.y_test, pred, sensitive_features=prepared.a_test)
    if prepared.has_counterfactual:
        minority = prepared.a_test == 1
        pred_cf = firm.predict(prepared.X_test_cf[minority])
        proba = proba_cf = None
        if hasattr(firm.model_, "predict_proba"):
            proba = firm.predict_proba(prepared.X_test[minority])[:, 1]
            proba_cf = firm.predict_proba(prepared.X_test_cf[minority])[:, 1]
        out.update(counterfactual_metrics(pred[minority], pred_cf, proba=proba, proba_cf=proba_cf))
    return out


@dataclass(frozen=True)
class TestSet:
    """What the firm is evaluated on; a light stand-in for ``Prepared`` in workers."""

    X_test: np.ndarray
    y_test: np.ndarray
    a_test: np.ndarray
    X_test_cf: np.ndarray | None = None

    @property
    def has_counterfactual(self) -> bool:
        return self.X_test_cf is not None

    @classmethod
    def of(cls, prepared: Prepared) -> "TestSet":
        return cls(prepared.X_test, prepared.y_test, prepared.a_test, prepared.X_test_cf)


def firm_design(estimator, X: np.ndarray):
    """The training matrix handed to the firm: CSR when the one-hot data is sparse
    and the estimator accepts it (same model, ~2x faster Newton steps on Adult)."""
    try:
        accepts_sparse = estimator.__sklearn_tags__().input_tags.sparse
    except AttributeError:
        accepts_sparse = False
    if accepts_sparse and X.size and np.count_nonzero(X) / X.size < 0.3:
        return sparse.csr_matrix(X)
    return X


def _fit_chain(base: Firm, X, y_list: list[np.ndarray], test: TestSet, warm: bool) -> list[dict]:
    """Fit the firm on each label vector in turn, warm-starting along the chain."""
    # One BLAS thread per process: two busy OpenBLAS pools on two cores spin
    # against each other and run several times slower than one.
    with threadpool_limits(1):
        out, previous = [], base
        for y in y_list:
            firm = previous.refit(X, y) if warm else Firm(base.estimator).fit(X, y)
            out.append(evaluate(firm, test))
            previous = firm
        return out


def train_cells(
    estimator,
    X,
    y: np.ndarray,
    cells: list[tuple[object, np.ndarray]],
    test: "Prepared | TestSet",
    *,
    warm: bool = True,
    n_jobs: int = 1,
    on_fit: Callable[[int], None] | None = None,
) -> tuple[dict, list[dict]]:
    """The firm trained on the true labels and on each cell's reported labels.

    ``cells`` are ``(chain, flips)`` pairs: the reported labels are ``y`` with
    the flipped users set to 1. Each distinct label vector is trained once;
    cells of the same ``chain`` (the engine uses (method, alpha)) are trained
    in increasing order of flips, each warm-started from the previous one, and
    chains run in parallel. Returns the base metrics and one dict per cell.
    The vectorised engine and the Flower ServerApp both train through here.
    """
    with threadpool_limits(1):
        base = Firm(estimator).fit(X, y)
    base_metrics = evaluate(base, test)
    if on_fit:
        on_fit(1)
    zero = _labels_key(np.zeros(len(y), dtype=bool))
    keys, chains, seen = [], {}, {zero}
    for group, flips in cells:
        key = _labels_key(flips)
        keys.append(key)
        if key not in seen:
            seen.add(key)
            chains.setdefault(group, []).append((int(np.count_nonzero(flips)), key, flips))
    chain_list = [sorted(chain, key=lambda t: t[0]) for chain in chains.values()]
    y_lists = [[relabel(y, flips) for _, _, flips in chain] for chain in chain_list]
    if n_jobs == 1:
        outputs = (_fit_chain(base, X, ys, test, warm) for ys in y_lists)
    else:
        outputs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_chain)(base, X, ys, test, warm) for ys in y_lists
        )
    results = {zero: base_metrics}
    for chain, metrics_list in zip(chain_list, outputs):
        for (_, key, _), metrics in zip(chain, metrics_list):
            results[key] = metrics
        if on_fit:
            on_fit(len(chain))
    if on_fit:  # cells whose label vector was already trained count as done too
        on_fit(len(cells) - sum(len(chain) for chain in chain_list))
    return base_metrics, [results[key] for key in keys]


def _labels_key(flips: np.ndarray) -> str:
    return hashlib.blake2b(np.packbits(flips).tobytes(), digest_size=16).hexdigest()


def _config_columns(scenario: Scenario, dataset: Dataset) -> dict:
    d, c, f = scenario.data, scenario.collective, scenario.firm
    return {
        "scenario": scenario.name,
        "dataset": d.dataset,
        "sensitive": dataset.sensitive,
        "include_sensitive": d.include_sensitive,
        "test_size": d.test_size,
        "reference": str(c.reference),
        "k": c.k,
        "firm": f.model,
        "backend": "vectorised",
    }


def run_seed(
    scenario: Scenario,
    seed: int,
    *,
    dataset: Dataset | None = None,
    n_jobs: int | None = None,
    on_fit: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """All cells of one seed: one row per (method, alpha, budget) plus the base row."""
    dataset = dataset if dataset is not None else load_data(scenario, seed=seed)
    world = build_world(scenario, dataset, seed)
    p = world.prepared
    coll = scenario.collective
    estimator = make_estimator(scenario.firm.model, scenario.firm.params, random_state=world.firm_seed)
    X_fit = firm_design(estimator, p.X_train)
    test = TestSet.of(p)
    cells = [
        cell
        for method in coll.methods
        for cell in plan_cells(world, method, candidate_scores(world, method, k=coll.k, alpha=max(coll.alphas)),
                               coll.alphas, coll.budgets)
    ]
    n_jobs = scenario.engine.n_jobs if n_jobs is None else n_jobs
    base_metrics, cell_metrics = train_cells(
        estimator, X_fit, p.y_train, [((c.method, c.alpha), c.flips) for c in cells], test,
        warm=scenario.engine.warm_start, n_jobs=n_jobs, on_fit=on_fit,
    )

    config = _config_columns(scenario, dataset)
    n_minority = int(world.minority.sum())
    common = {**config, "seed": seed, "n_train": p.y_train.size, "n_minority": n_minority}
    rows = [{**common, **cell_columns(BASE, 0.0, 0.0), **base_metrics}]
    rows += [{**common, **cell.columns(), **metrics} for cell, metrics in zip(cells, cell_metrics)]
    if scenario.compares:  # firm-side baselines, defences, adaptive collective: same World
        from .comparison import extend_rows

        rows = extend_rows(scenario, world, rows, cells, common=common, estimator=estimator,
                           X_fit=X_fit, test=test, streams=seed_streams(seed), n_jobs=n_jobs, on_fit=on_fit)
    return pd.DataFrame(rows)


def count_fits(scenario: Scenario) -> int:
    """An upper bound on firm fits per seed (for progress bars)."""
    c = scenario.collective
    extra = 0
    if scenario.compares:
        from .comparison import count_extra_fits

        extra = count_extra_fits(scenario)
    return 1 + len(c.methods) * len(c.alphas) * len(c.budgets) + extra


def run_scenario(scenario: Scenario, *, n_jobs: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Run every seed of a scenario in memory and return the tidy results table."""
    from tqdm.auto import tqdm

    frames = []
    with tqdm(total=count_fits(scenario) * len(scenario.seeds), disable=not progress, unit="fit") as bar:
        for seed in scenario.seeds:
            start = time.perf_counter()
            frames.append(run_seed(scenario, seed, n_jobs=n_jobs, on_fit=bar.update))
            frames[-1]["seconds"] = time.perf_counter() - start
    return pd.concat(frames, ignore_index=True)
