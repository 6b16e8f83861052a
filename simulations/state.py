"""A run's state at round t, and the world it lives in.

A :class:`World` is what one seed fixes: the split and encoding of the data,
every user's tickets, the majority rows the collective may see, the firm's
seed. A :class:`RunState` is the run at round ``t``: the collective's
membership and behaviour, the last signal its coordinator published, the
reports the firm holds and how the firm's models score on the test set. A
backend's step advances it by one round (:func:`simulations.engine.step` over
every user at once); the paper's one-shot experiment is one step from round 0.

Randomness: one seed per run, spawned into named, independent
``SeedSequence`` streams (:func:`seed_streams`); never a global generator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from agents import rule
from agents.decision import TicketHolder, member_count, membership_cutoff, stream_key
from agents.protocol import CellGrid, Signal
from agents.validation import stream_int
from agents.scoring import make_scorer
from server.training import TestSet

from .datasets import Dataset, Prepared, prepare

__all__ = ["Decisions", "RunState", "World", "build_world", "collective_decisions", "initial_state", "seed_streams"]

# Stream names, in spawn order. New streams are appended: a SeedSequence's i-th
# child does not depend on how many are spawned, so existing streams never move.
STREAMS = ("split", "membership", "ties", "reference", "firm",
           "baselines", "defence", "trusted", "adaptive",  # these four: simulations.comparison
           "validation",  # the collective's pilot (World.pilot)
           "graph", "participation", "organisers", "dropout", "compliance", "noise",  # simulations.dynamics
           "knowledge")  # simulations.dynamics: members' knowledge groups and each group's reference rows


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """The run's independent random streams, spawned from its one seed."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))


@dataclass(frozen=True)
class World(TicketHolder):
    """Everything one seed of a scenario shares across its cells and rounds."""

    seed: int
    prepared: Prepared
    user_ids: np.ndarray  # training users' ids (dataset row positions)
    membership_key: int  # member tickets decide who joins (nested in alpha)
    tie_key: int  # tie tickets break score ties in the coalition rule
    reference: np.ndarray  # training rows of the majority the collective sees
    firm_seed: int
    # What the collective knows of the majority, when it is not this world's own rows
    # (the pilot keeps the knowledge of the world it was drawn from).
    known_majority: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def minority(self) -> np.ndarray:
        return self.prepared.a_train == 1

    @property
    def n_users(self) -> int:
        return int(self.user_ids.size)

    @property
    def test(self) -> TestSet:
        p = self.prepared
        return TestSet(p.X_test, p.y_test, p.a_test, p.X_test_cf)

    def members(self, alpha: float) -> np.ndarray:
        """Mask of the collective at size ``alpha`` (nested: grows with alpha)."""
        minority, tickets = self.minority, self.member_tickets
        count = member_count(alpha, int(minority.sum()))
        return minority & (tickets < membership_cutoff(tickets[minority], count))

    def candidates(self, alpha: float) -> np.ndarray:
        """Positions of the candidates (members with y = 0) of the collective at ``alpha``.
        Collectives are nested, so the grid's largest alpha holds every cell's candidates."""
        return np.flatnonzero(self.members(alpha) & (self.prepared.y_train == 0))

    def pilot(self, fraction: float) -> "World":
        """The collective's own pilot study: a world whose training users leave out a
        held-out ``fraction`` of them (stratified by (a, y), drawn from the ``validation``
        stream) and whose test set is those held-out users with their true labels.

        Running the grid in it shows the collective what each budget does without
        reading the firm's test set. The collective knows what it knew of the majority
        (the same reference rows, held out or not), so its members score as they do
        in the full world. (The feature encoding is the firm's, fitted on all training
        rows: features only, no labels.)
        """
        from sklearn.model_selection import train_test_split

        p = self.prepared
        n = self.n_users
        strata = 2 * p.a_train.astype(np.int64) + p.y_train
        seed = stream_int(seed_streams(self.seed)["validation"], bits=32)
        try:
            keep, held = train_test_split(np.arange(n), test_size=fraction, stratify=strata, shuffle=True,
                                          random_state=seed)
        except ValueError:  # a tiny (a, y) group cannot be stratified: a plain random split
            keep, held = train_test_split(np.arange(n), test_size=fraction, shuffle=True, random_state=seed)
        keep, held = np.sort(keep), np.sort(held)
        cf = {}
        if p.X_train_cf is not None:
            cf = dict(X_train_cf=p.X_train_cf[keep], X_test_cf=p.X_train_cf[held],
                      cf_proba_train=p.cf_proba_train[keep], cf_proba_test=p.cf_proba_train[held])
        pilot = dataclasses.replace(
            p, X_train=p.X_train[keep], y_train=p.y_train[keep], a_train=p.a_train[keep],
            X_test=p.X_train[held], y_test=p.y_train[held], a_test=p.a_train[held],
            train_index=p.train_index[keep], test_index=p.train_index[held], **cf)
        position = np.full(n, -1)
        position[keep] = np.arange(keep.size)
        reference = position[self.reference]
        return dataclasses.replace(self, prepared=pilot, user_ids=self.user_ids[keep], reference=reference[reference >= 0],
                                   known_majority=self.majority_knowledge())

    def majority_knowledge(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of the majority rows the collective sees."""
        if self.known_majority is not None:
            return self.known_majority
        p = self.prepared
        return p.X_train[self.reference], p.y_train[self.reference]

    def scores(self, method: str, users: np.ndarray, params: dict | None = None) -> np.ndarray:
        """Scores of ``users`` (positions) by ``method`` with its ``params`` (e.g. ``k``),
        fitted on the majority reference."""
        p = self.prepared
        scorer = make_scorer(method, **(params or {})).fit(*self.majority_knowledge())
        extra = {"counterfactual_proba": p.cf_proba_train[users]} if method == "oracle" else {}
        return scorer.score_samples(p.X_train[users], **extra)


def build_world(scenario, dataset: Dataset, seed: int) -> World:
    """Split, encode and draw the per-user tickets for one seed."""
    streams = seed_streams(seed)
    prepared = prepare(dataset, test_size=scenario.data.test_size, include_sensitive=scenario.data.include_sensitive,
                       random_state=stream_int(streams["split"], bits=32))
    majority = np.flatnonzero(prepared.a_train == 0)
    ref = scenario.collective.reference
    if ref != "all":
        rng = np.random.default_rng(streams["reference"])
        majority = np.sort(rng.choice(majority, size=min(ref, majority.size), replace=False))
    return World(
        seed=seed,
        prepared=prepared,
        user_ids=np.asarray(prepared.train_index, dtype=np.int64),
        membership_key=stream_key(streams["membership"]),
        tie_key=stream_key(streams["ties"]),
        reference=majority,
        firm_seed=stream_int(streams["firm"]),
    )


@dataclass(frozen=True)
class Decisions:
    """The collective's decisions in every cell of a grid: the signal and who flips."""

    grid: CellGrid
    signal: Signal
    candidates: np.ndarray  # positions of the candidates among the training users
    flips: np.ndarray  # (cells, candidates) bool
    n_users: int

    def mask(self, c: int) -> np.ndarray:
        """Cell ``c``'s flips as a mask over every training user."""
        out = np.zeros(self.n_users, dtype=bool)
        out[self.candidates] = self.flips[c]
        return out

    @property
    def n_flips(self) -> np.ndarray:
        return self.flips.sum(axis=1)


def collective_decisions(world: World, grid, scores: np.ndarray, candidates: np.ndarray, *,
                         held_back=None) -> "Decisions":
    """Both halves of the collective's rule over every candidate at once.

    ``candidates`` are the positions of the members (at the grid's largest
    alpha) with y = 0 and ``scores`` their scores, one row per method;
    ``held_back`` (per alpha, per candidate) leaves candidates out of the ranking.
    """
    member_tickets, tie_tickets = world.member_tickets, world.tie_tickets
    cutoffs, n_members = rule.membership_cutoffs(member_tickets[world.minority], grid.alphas)
    mt, tt = member_tickets[candidates], tie_tickets[candidates]
    signal = rule.publish(grid, cutoffs, n_members, mt, tt, scores, held_back=held_back)
    flips = rule.decide_cells(grid, signal, mt, tt, scores, held_back=held_back)
    return Decisions(grid, signal, candidates, flips, world.n_users)


@dataclass(frozen=True)
class RunState:
    """A run at round ``t``: what every party holds after ``t`` steps.

    * the collective: ``scores`` of its candidates per method (recomputed when
      what it knows of the majority changes), ``behaviour`` (per-user state such
      as compliance or dropout: empty for the paper's perfectly coordinated
      collective) and ``decisions``, the last published signal and who acted on it;
    * the firm: the reported labels it holds (``decisions`` applied to the true
      labels) and ``metrics``, its current models evaluated on the test set
      (the base model first, then one per cell).
    """

    round: int
    world: World
    grid: CellGrid
    params: Mapping[str, dict] = field(default_factory=dict)  # each method's own parameters (k)
    scores: np.ndarray | None = None  # (methods, candidates) at the grid's largest alpha
    behaviour: Mapping[str, np.ndarray] = field(default_factory=dict)
    decisions: Decisions | None = None
    metrics: tuple = ()

    def replace(self, **changes) -> "RunState":
        return dataclasses.replace(self, **changes)


def initial_state(scenario, dataset: Dataset, seed: int) -> RunState:
    """Round 0: the world is drawn, nobody has acted, the firm holds nothing yet."""
    c = scenario.collective
    return RunState(round=0, world=build_world(scenario, dataset, seed),
                    grid=CellGrid.of(c.methods, c.alphas, c.budgets), params=c.scorer_params())
