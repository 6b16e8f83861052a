"""Many rounds: a retraining firm, members who join and leave, imperfect coordination.

The paper's experiment is one round of a perfectly coordinated collective of a
fixed size (:func:`simulations.engine.run_seed`). A scenario with a
``[dynamics]`` section runs :class:`CollectiveDynamics` instead, a Mesa-style
model: one object per seed holding the world, explicit random streams (spawned
from the run's one seed), a :meth:`~CollectiveDynamics.step` per round, and a
data collector (:meth:`~CollectiveDynamics.table`) giving a tidy per-round table.
Every cell of the grid (method, alpha, budget) is its own trajectory, and so is
each coordination mode listed (paired: the same draws in every trajectory).

Who is who. ``alpha`` is the share of the minority that *knows of* the
collective: the members, nested by membership tickets as in the one-shot
experiment. The participation rule decides which members act each round (the
participants); participants with y = 0 are the round's candidate pool, and the
budget is a fraction of that pool (or a count). The members' graph
(``[dynamics.graph]``) is a graph among the minority's training users; a
member sees the members among its neighbours, and the collective's messages
(``reach``, ``gossip``) travel between this round's participants only.

Round t (t = 1..rounds), for every trajectory:

1. the firm publishes its model: trained last round on the reports it held
   (round 1: the base model, trained on the true labels);
2. members observe what a person could (``public``): their own predicted outcome
   under the published model (``own-outcome``: its probability of the
   favourable label) and the favourable-outcome rate per group the firm
   publishes (``group-rates``: its selection rates on the test set);
3. participation updates: the rule, then organisers (who always act and never
   drop out), then dropout (each other participant sits the round out with
   probability ``dropout``);
4. coordination gives each participant a threshold and every candidate decides
   locally, as in :mod:`agents.rule` ((score, tie ticket) >= its threshold),
   on its own score plus ``score_noise``, using the signal of ``staleness``
   rounds ago (none yet: it does not act), and follows it with probability
   ``compliance``;
5. the firm receives every training user's report (true label, or 1 for a flip)
   and retrains, warm-started from its own last model when the estimator
   supports it; a firm whose training set did not change keeps its model
   (round 1: :func:`server.training.train_cells` fits the base model and every
   cell, as the one-shot run does, and returns the fitted firms);
6. the model is evaluated on the test set (:func:`server.training.evaluate`) and
   one row per trajectory is collected.

With ``rounds = 1``, fixed participation, the coordinator, compliance 1 and no
noise, dropout or staleness, round 1 *is* the one-shot experiment: the same
decisions and the same fits (the same :func:`server.training.train_cells` call:
warm-start chains along each (method, alpha)'s budgets), so ``runs.csv`` is
byte-identical to a run without ``[dynamics]``. The last round's rows of the first coordination mode go to
``runs.csv`` (the one-shot columns, with the collective's one-shot pilot when
``[collective] validation`` is set), every round's rows to ``rounds.csv``.

``[dynamics]`` keys (defaults in brackets):

* ``rounds`` [10];
* ``reports`` ["replace"]: the firm trains on this round's reports;
  "accumulate": on the reports of the last ``window`` rounds ["all"], each
  round's reports being one more copy of every training row;
* ``participation`` ["fixed"]: every member acts every round;
  "threshold" (Granovetter): thresholds ~ Normal(``threshold_mean`` [0.25],
  ``threshold_sd`` [0.1]) per member, drawn once; a member joins once the share
  of participants it saw last round reaches its threshold, among all members
  (``seen = "everyone"``) or among its neighbours who are members
  (``"neighbours"``); joining is for good unless ``leave`` [false];
  "benefit-cost": costs ~ Normal(``cost_mean`` [0.02], ``cost_sd`` [0.01]) per
  member, drawn once; a member's gain is what the published models of the last
  ``memory`` [1] rounds gave it over the base model, averaged: the change of its
  own favourable probability (``own-outcome``) plus the change of the minority's
  favourable rate minus the majority's (``group-rates``), as ``public``
  [both] allows; it acts iff gain > cost (:func:`agents.participation.published_gain` and
  :func:`agents.participation.benefit_cost_round`, the calls a Flower node makes; a logistic
  firm's favourable probability is :func:`agents.participation.linear_favourable`).
  With ``free_ride`` [false] a member reckons its own action adds only 1/N of
  what the N participants of last round achieved, keeps the rest without
  acting, and free rides when that share does not pay its cost;
* ``organisers`` [0]: an int count or a fraction of the members (at least one
  when > 0), chosen ``organisers_by`` ["random"] or "most-connected"
  (degree in the members' graph); they always act;
* ``[dynamics.graph]`` ``kind`` ["complete"]: "erdos-renyi" (``mean_degree``),
  "barabasi-albert" (``m``), "watts-strogatz" (``k``, ``p``), "sbm" (``blocks``
  communities of equal expected size, ``p_in``, ``p_out``), "edge-list"
  (``path``: lines "u v" of dataset row ids, relative to the scenario file: the
  social graph of the whole data set; each seed keeps the edges among its
  minority training users, so one file serves every seed; an id that is not a
  row of the data set is an error); :mod:`simulations.graphs` builds it;
* ``coordination`` ["coordinator"], or a list of modes (the first is the run's,
  the others paired reference trajectories in ``rounds.csv``):
  "coordinator": the paper's coordinator reaches every participant with the
  threshold of the whole pool; "reach": it hears from and reaches only the
  participants within ``hops`` [1] of a participating organiser (over the
  participants' graph), and publishes the threshold of *their* pool; the others
  get no signal and do not act; "gossip": no coordinator, each participant
  estimates the threshold in ``gossip_steps`` [30] steps over the participants'
  graph: min/max consensus on the key range (no estimate before it is known),
  then push-sum of a ``gossip_bins`` [256]-bin histogram of the candidates' keys
  (:func:`agents.gossip.gossip_thresholds`); a key is the score with the tie
  ticket folded in below the scores' resolution, so keys order candidates as
  (score, ticket) does; members aim at the budget's share of the pool they
  estimate (a count budget: M / pool). Gossip needs a graph (not "complete");
* ``compliance`` [1], ``dropout`` [0] (probabilities), ``score_noise`` [0] (the sd
  added to each candidate's own score, fresh each round), ``staleness`` [0]
  (rounds);
* ``reference_per_member`` ["all"]: limited majority information per member.
  An int n: the members are split into ``knowledge_groups`` [1] groups G by a
  ticket, each group knows only n rows of the collective's majority reference
  (its own uniform choice), and its members score themselves with the scorer
  (each method, with its parameters) fitted on those rows, once per seed. The
  coordinator still ranks the pool by the scores it hears, so M still flip, but
  who flips follows each group's own scale (a group whose rows look more
  positive flips first) rather than the ranking full knowledge gives. n at
  least the reference's size: every member knows it all (the default).

A key read only by a mode that is not chosen is an error, as is ``reach``
without organisers (it would reach nobody).

Randomness: the graph, the members' thresholds and costs, the organisers,
dropout, compliance, score noise and knowledge each have their own named stream
(:data:`simulations.state.STREAMS`). The graph is drawn once, centrally, from its
stream. Every per-user draw is a *ticket* (:func:`agents.decision.user_tickets`),
a pure function of (key, user id), so a user's draw does not depend on who else
is drawn with it and a Flower node holding K users draws exactly what this model
draws for them (:func:`draw_keys` gives the keys): thresholds and costs are the
inverse normal CDF of a ticket under the ``participation`` stream's keys
(:func:`agents.participation.normal_draws`); organisers are the members with the
smallest ``organisers`` tickets (or the most connected, ties by ticket); dropout,
compliance and noise use the round's key ``round_key(stream key, t)``
(:func:`agents.participation.round_key`; noise per method too:
``mix_key(stream key, t, method index)``); a member's knowledge group is
``floor(G x ticket)`` under ``mix_key(knowledge key, 0)`` and group g knows the n
reference rows with the smallest tickets under ``mix_key(knowledge key, 1, g)``
(:meth:`DrawKeys.knowledge_group`, :meth:`DrawKeys.known_rows`). Every trajectory of a seed sees the
same draws (common random numbers), and one trajectory's draws never depend on
another's.

Per-round table (``rounds.csv``; one row per seed x coordination x cell x round,
plus a ``base`` row per round where nobody relabels). Columns:

* the configuration columns of ``runs.csv`` (:func:`simulations.rows.config_columns`),
  ``seed``, ``coordination``, ``round`` (1..rounds), ``method``, ``alpha``,
  ``budget``, ``budget_kind`` (and ``k`` for rb-label/rb-dist);
* ``eligible``: members (know of the collective); ``organisers``;
  ``participants`` (acting this round, after dropout) and ``participant_share``
  (of the minority's training users); ``dropouts``; ``free_riders``;
* ``candidates``: participants with y = 0 (the pool); ``members_reached``:
  participants who got this round's signal; ``m``: the budget count of the
  pool; ``intended_flips``: candidates whose signal says flip; ``flips``: those
  who did (compliance); ``flips_minus_m``;
* ``threshold``: the coordinator's published threshold (score; NaN for gossip,
  inf when nobody is to flip); ``threshold_error``: mean |own threshold - exact
  threshold| over candidates holding a signal, in score units (gossip: key units,
  within half the smallest score gap of score units), and
  ``threshold_error_rank``: the same in ranks (how many more or fewer candidates
  the own threshold lets flip than M), the exact threshold being the M-th best
  of this round's pool (:func:`agents.decision.coalition_threshold`);
* ``benefit_participants``, ``benefit_free_riders``, ``benefit_minority``: the
  mean change, from the base model to this round's model, of the predicted
  probability of the favourable label of participants, free riders and every
  minority training user (the benefit of acting vs free riding, Sigg et al.);
* ``retrain_seconds``: seconds of the fit that produced this round's model (0 when
  the firm kept its model; NaN in round 1, whose fits are the one-shot run's
  :func:`server.training.train_cells`, which does not time each fit);
* the firm's test metrics, as in ``runs.csv``: ``error``, ``sp_diff``, ``eqod``,
  ``eopp_diff``, ``tpr_0``, ``tpr_1``, ``fpr_0``, ``fpr_1``, ``sel_0``, ``sel_1``, ...,
  and on synthetic data the counterfactual success ``success`` (S) and ``cf_gap``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import sparse
from threadpoolctl import threadpool_limits

from agents import participation as rules
from agents.rounds import fold_deltas, gossip_estimates, organiser_count, reached as reached_within, threshold_errors
from agents.decision import Threshold, coalition_threshold, decide, relabel, stream_key, user_tickets
from agents.errors import CollectiveFairnessError, ConfigError
from agents.protocol import Cell, CellGrid, budget_count
from server.firm import Firm, make_estimator
from server.training import evaluate, firm_design, train_cells

from .engine import candidate_scores, load_data, pilot_columns
from .executors import Executor, make_executor
from .rows import BASE, cell_columns, config_columns, method_columns
from .state import RunState, World, initial_state, seed_streams

__all__ = ["DYNAMICS_COLUMNS", "CollectiveDynamics", "DrawKeys", "count_fits", "draw_keys", "run_scenario",
           "run_seed", "setup"]

# The per-round columns between the cell's and the firm's metrics, in order.
DYNAMICS_COLUMNS = (
    "eligible", "organisers", "participants", "participant_share", "dropouts", "free_riders", "candidates",
    "members_reached", "m", "intended_flips", "flips", "flips_minus_m", "threshold", "threshold_error",
    "threshold_error_rank", "benefit_participants", "benefit_free_riders", "benefit_minority", "retrain_seconds",
)


def _child_rng(stream: np.random.SeedSequence, *key: int) -> np.random.Generator:
    """A generator for one use of a stream (the graph's block labels): the stream's child ``key``."""
    return np.random.default_rng(np.random.SeedSequence(stream.entropy, spawn_key=stream.spawn_key + key))


@dataclass(frozen=True)
class DrawKeys:
    """The 64-bit ticket keys of a seed's per-user draws (see the module docstring).

    Per-round keys are ``round_key(key, t)``; a user's draw is then
    ``user_tickets([user id], that key)``: what a Flower node needs to draw exactly
    what :class:`CollectiveDynamics` draws for its users.
    """

    threshold: int
    cost: int
    organisers: int
    dropout: int
    compliance: int
    noise: int
    knowledge: int

    def round(self, name: str, t: int) -> int:
        return rules.round_key(getattr(self, name), t)

    def knowledge_group(self, user_ids, groups: int) -> np.ndarray:
        """Each user's knowledge group in 0..groups-1: ``floor(groups x ticket)`` under
        ``mix_key(knowledge, 0)``, uniform and a pure function of (key, user id)."""
        tickets = user_tickets(user_ids, rules.mix_key(self.knowledge, 0))
        return np.minimum((tickets * groups).astype(np.int64), groups - 1)

    def known_rows(self, reference_ids, group: int, n: int) -> np.ndarray:
        """Which of the reference rows (``reference_ids``: their user ids) knowledge group
        ``group`` knows: the ``n`` with the smallest tickets under ``mix_key(knowledge, 1,
        group)`` (a uniform choice without replacement, every group its own), as increasing
        positions; all of them when ``n`` reaches their number."""
        reference_ids = np.asarray(reference_ids)
        if n >= reference_ids.size:
            return np.arange(reference_ids.size)
        tickets = user_tickets(reference_ids, rules.mix_key(self.knowledge, 1, group))
        return np.sort(np.argsort(tickets, kind="stable")[:n])

    def noise_key(self, t: int, method_index: int) -> int:
        return rules.mix_key(self.noise, t, method_index)


def draw_keys(seed: int) -> DrawKeys:
    """The ticket keys of a seed, from its named streams (:func:`simulations.state.seed_streams`)."""
    streams = seed_streams(seed)
    participation = streams["participation"]

    def child(stream, i):
        return np.random.SeedSequence(stream.entropy, spawn_key=stream.spawn_key + (i,))

    return DrawKeys(threshold=stream_key(child(participation, 0)), cost=stream_key(child(participation, 1)),
                    organisers=stream_key(streams["organisers"]), dropout=stream_key(streams["dropout"]),
                    compliance=stream_key(streams["compliance"]), noise=stream_key(streams["noise"]),
                    knowledge=stream_key(streams["knowledge"]))


def _labels_key(labels: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(labels, dtype=np.int8).tobytes(), digest_size=16).hexdigest()


def _fit_chain(start: Firm, X, label_list: list[np.ndarray], test, warm: bool) -> list[tuple]:
    """Fit the firm on each label vector in turn from ``start``, warm-starting along the
    chain (as :func:`server.training.train_cells` does); returns (firm, metrics, seconds)."""
    with threadpool_limits(1):
        out, previous = [], start
        for y in label_list:
            began = time.perf_counter()
            firm = previous.refit(X, y) if warm else Firm(start.estimator).fit(X, y)
            seconds = time.perf_counter() - began
            out.append((firm, evaluate(firm, test), seconds))
            previous = firm
        return out


def _favourable(firm: Firm, X) -> np.ndarray:
    """Each row's predicted probability of the favourable label (the label itself
    for a model without probabilities)."""
    model = firm.model_
    linear = _linear(model)
    if linear is not None:  # what a Flower node computes from the published model (agents.participation)
        return rules.linear_favourable(X, *linear)
    if hasattr(model, "predict_proba"):
        return firm.predict_proba(X)[:, list(model.classes_).index(1)]
    return firm.predict(X).astype(np.float64)


def _linear(model) -> tuple[np.ndarray, np.ndarray] | None:
    """A binary logistic model's (coef, intercept) for label 1 (None: another model)."""
    from sklearn.linear_model import LogisticRegression

    if isinstance(model, LogisticRegression) and list(model.classes_) == [0, 1] and model.coef_.shape[0] == 1:
        return model.coef_[0], model.intercept_
    return None


def _gap(metrics: dict) -> float:
    """The published favourable-rate gap, minority minus majority."""
    return float(metrics["sel_1"] - metrics["sel_0"])


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


@dataclass
class _Members:
    """The members at one alpha: who they are, what they hold, whom they see."""

    local: np.ndarray  # positions among the minority users
    positions: np.ndarray  # positions among the training users
    candidate: np.ndarray  # y = 0, per member
    column: np.ndarray  # column of a candidate in the scores matrix (-1: not a candidate)
    ties: np.ndarray  # tie tickets
    graph: sparse.csr_matrix | None  # among the members (None: everyone sees everyone)
    organisers: np.ndarray  # mask per member
    thresholds: np.ndarray
    costs: np.ndarray

    @property
    def n(self) -> int:
        return int(self.local.size)


@dataclass
class _Trajectory:
    """One cell under one coordination mode (``cell`` None: the base, nobody relabels)."""

    cell: Cell | None
    mode: str
    members: _Members | None
    firm: Firm | None  # None before round 1's fits
    key: str  # of the training labels the firm holds
    metrics: dict
    outcomes: np.ndarray  # favourable probability of every minority user under the published model
    reports: deque
    joined: np.ndarray | None = None
    active: np.ndarray | None = None
    signals: rules.SignalHistory | None = None
    gains: deque | None = None
    seconds: float = 0.0
    row: dict = field(default_factory=dict)  # this round's collective columns
    last: dict = field(default_factory=dict)  # this round's full row


class CollectiveDynamics:
    """The multi-round model of one seed (see the module docstring).

    ``model = CollectiveDynamics(scenario, state, estimator=...)``, then
    ``model.step()`` once per round (``model.run()`` for all of them);
    ``model.table()`` is the per-round table and ``model.last_rows(common)`` the
    last round's ``runs.csv`` rows.
    """

    def __init__(self, scenario, state: RunState, *, estimator=None, executor: Executor | None = None,
                 on_fit: Callable[[int], None] | None = None, setup_only: bool = False):
        self.scenario, self.config = scenario, scenario.dynamics
        self.world: World = state.world
        self.grid, self.params = state.grid, state.params
        self.executor, self.on_fit = executor, on_fit
        self.warm = scenario.engine.warm_start
        world, p = self.world, self.world.prepared
        self.streams = seed_streams(world.seed)
        self.keys = draw_keys(world.seed)
        self.estimator = estimator if estimator is not None else make_estimator(
            scenario.firm.model, scenario.firm.params, random_state=world.firm_seed)
        self.round = 0
        self.rows: list[dict] = []
        self.timings: dict[str, float] = defaultdict(float)  # seconds per phase, all rounds (benchmarks)
        self.X = firm_design(self.estimator, p.X_train)
        self._stacked = {1: self.X}
        self.minority = np.flatnonzero(world.minority)
        self.X_minority = p.X_train[self.minority]
        self.candidates = world.candidates(max(self.grid.alphas))
        self._column = np.full(world.n_users, -1, dtype=np.int64)
        self._column[self.candidates] = np.arange(self.candidates.size)
        self._build_members()
        if setup_only:  # check_world: the graph and organisers are all it needs
            return
        if self.config.reference_per_member == "all":
            self.candidates, self.scores = candidate_scores(world, self.grid, self.params)
        else:
            self.scores = self._member_scores()
        # Round 1's published model is the base model on the true labels; round 1's fits
        # (server.training.train_cells, the one-shot run's) give it, with every cell's firm.
        self.base_metrics: dict | None = None
        self.base_outcomes: np.ndarray | None = None
        window = 1 if self.config.reports == "replace" else None if self.config.window == "all" else self.config.window

        def trajectory(cell, mode):
            t = _Trajectory(cell, mode, None if cell is None else self.members[cell.alpha_index], None, "",
                            {}, np.empty(0), deque(maxlen=window))
            if cell is not None:
                n = t.members.n
                t.joined, t.active = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
                t.signals = rules.SignalHistory(self.config.staleness)
                t.gains = deque(maxlen=self.config.memory)
            return t

        self.base = trajectory(None, BASE)
        self.trajectories = [trajectory(cell, mode) for mode in self.config.coordination for cell in self.grid]

    # ------------------------------------------------------------------ setup

    def _build_members(self) -> None:
        """The graph among the minority, per-user thresholds and costs, and per alpha the
        members, their subgraph and organisers."""
        c, world, p = self.config, self.world, self.world.prepared
        n_min = self.minority.size
        self.graph = None
        if c.uses_graph:
            self.graph = self._graph(n_min)
        ids = world.user_ids[self.minority]
        thresholds = rules.normal_draws(ids, self.keys.threshold, mean=c.threshold_mean, sd=c.threshold_sd)
        costs = rules.normal_draws(ids, self.keys.cost, mean=c.cost_mean, sd=c.cost_sd)
        organiser_tickets = user_tickets(ids, self.keys.organisers)
        tie_tickets = world.tie_tickets
        self.members = []
        for alpha in self.grid.alphas:
            local = np.flatnonzero(world.members(alpha)[self.minority])
            positions = self.minority[local]
            graph = None if self.graph is None else self.graph[local][:, local].tocsr()
            count = self._organiser_count(local.size)
            organisers = rules.organisers(local.size, count, how=c.organisers_by, adjacency=graph,
                                          tickets=organiser_tickets[local])
            self.members.append(_Members(
                local=local, positions=positions, candidate=p.y_train[positions] == 0,
                column=self._column[positions], ties=tie_tickets[positions], graph=graph, organisers=organisers,
                thresholds=thresholds[local], costs=costs[local]))

    def _member_scores(self) -> np.ndarray:
        """Every candidate's scores (one row per method) when members know only
        ``reference_per_member`` majority rows: each knowledge group's scorer is fitted on
        its own rows of the collective's reference (:meth:`DrawKeys.known_rows`) and scores
        the group's candidates (:meth:`World.scores`, each method with its parameters)."""
        c, world, p = self.config, self.world, self.world.prepared
        reference = world.reference
        groups = self.keys.knowledge_group(world.user_ids[self.candidates], c.knowledge_groups)
        scores = np.zeros((len(self.grid.methods), self.candidates.size))
        for g in np.unique(groups):
            users = np.flatnonzero(groups == g)
            rows = reference[self.keys.known_rows(world.user_ids[reference], int(g), c.reference_per_member)]
            known = dataclasses.replace(world, known_majority=(p.X_train[rows], p.y_train[rows]))
            for i, method in enumerate(self.grid.methods):
                try:
                    scores[i, users] = known.scores(method, self.candidates[users], self.params.get(method))
                except ValueError as exc:
                    raise ConfigError(
                        f"[dynamics] reference_per_member: knowledge group {int(g)}'s {rows.size} majority rows "
                        f"cannot fit {method!r} ({exc}); allowed: a larger reference_per_member (or fewer "
                        "knowledge_groups, or another method)") from None
        return scores

    def _graph(self, n: int):
        from .graphs import build_graph

        spec = dict(self.config.graph)
        kind = spec.pop("kind")
        if kind == "sbm":
            blocks = spec.pop("blocks", 2)
            spec["groups"] = _child_rng(self.streams["graph"], 1).integers(0, blocks, size=n)
        if kind == "edge-list":
            spec["user_ids"] = self.world.user_ids[self.minority]
            # The file names people of the whole data set; this seed's graph is among its minority
            # training users (edges to others are dropped), so one file serves every seed.
            spec["known_ids"] = np.arange(self.world.prepared.dataset.n_samples)
        try:
            return build_graph(kind, n, rng_or_seed=self.streams["graph"], **spec)
        except CollectiveFairnessError as exc:
            line = f"[dynamics.graph] {exc}"
            if "; allowed: " not in line:
                line += ("; allowed: a readable UTF-8 file of 'u v' lines (dataset row ids)"
                         if kind == "edge-list" else f"; allowed: parameters that fit a graph of the {n} minority "
                                                     "training users")
            raise type(exc)(line) from None

    def _organiser_count(self, n_members: int) -> int:
        # The one rule, shared with the Flower coordinator (agents.rounds.organiser_cutoffs).
        return organiser_count(n_members, self.config.organisers)

    @contextlib.contextmanager
    def _clock(self, phase: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] += time.perf_counter() - began

    def _stacked_design(self, copies: int):
        if copies not in self._stacked:
            X = self.X
            self._stacked[copies] = sparse.vstack([X] * copies, format="csr") if sparse.issparse(X) else np.vstack(
                [X] * copies)
        return self._stacked[copies]

    # ------------------------------------------------------------------ a round

    def step(self) -> list[dict]:
        """One round for every trajectory; returns (and collects) its rows."""
        self.round += 1
        t, c, n_min = self.round, self.config, self.minority.size
        with self._clock("draws"):
            ids = self.world.user_ids[self.minority]
            stay = rules.dropout(np.ones(n_min, dtype=bool), c.dropout,
                                 user_tickets(ids, self.keys.round("dropout", t)))
            complies = rules.comply(user_tickets(ids, self.keys.round("compliance", t)), c.compliance)
            if c.score_noise > 0:
                cand_ids = self.world.user_ids[self.candidates]
                noise = np.stack([user_tickets(cand_ids, self.keys.noise_key(t, i)) for i in range(len(self.scores))])
                noisy = rules.noisy_scores(self.scores, c.score_noise, noise)
            else:
                noisy = self.scores.copy()
            folded = self._folded(noisy) if "gossip" in c.coordination else None
        for trajectory in self.trajectories:
            self._collective(trajectory, stay, complies, noisy, folded)
        with self._clock("relabel"):
            y = self.world.prepared.y_train
            self.base.reports.append(np.asarray(y, dtype=np.int8))
            for trajectory in self.trajectories:
                flips = np.zeros(self.world.n_users, dtype=bool)
                flips[trajectory.members.positions[trajectory.row.pop("_flips")]] = True
                trajectory.reports.append(relabel(y, flips))
        self._retrain()
        with self._clock("rows"):
            rows = [self._row(trajectory) for trajectory in (self.base, *self.trajectories)]
        self.rows.extend(rows)
        return rows

    def run(self) -> "CollectiveDynamics":
        for _ in range(self.config.rounds - self.round):
            self.step()
        return self

    def _participation(self, tr: _Trajectory, stay: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(joined, participating this round, free riding) per member."""
        c, m = self.config, tr.members
        free = np.zeros(m.n, dtype=bool)
        if c.participation == "fixed":
            joined = np.ones(m.n, dtype=bool)
        elif c.participation == "threshold":
            seen = rules.neighbour_share(m.graph if c.seen == "neighbours" else None, tr.active)
            joined = rules.threshold_rule(m.thresholds, seen, tr.joined, leave=c.leave)
        else:  # benefit-cost: what the published models gave, against what acting costs
            # (round 1 publishes the base model, before any fit: nothing gained over it)
            # (agents.participation.published_gain / benefit_cost_round: a Flower node's own calls)
            published = tr.firm is not None
            tr.gains.append(rules.published_gain(
                c.public, m.n, own=tr.outcomes[m.local] if published else None, base_own=self.base_outcomes[m.local]
                if published else None, gap=_gap(tr.metrics) if published else None,
                base_gap=_gap(self.base_metrics) if published else None))
            joined, free = rules.benefit_cost_round(tr.gains, m.costs, tr.joined, free_ride=c.free_ride,
                                                    participants=int(tr.active.sum()))
        joined = joined | m.organisers
        active = (joined & stay[m.local]) | m.organisers
        return joined, active, free & ~m.organisers

    def _reach(self, m: _Members, active: np.ndarray) -> np.ndarray:
        """Participants within ``hops`` of a participating organiser, over the participants' graph
        (:func:`agents.rounds.reached`, the Flower coordinator's own)."""
        return reached_within(m.graph, active, m.organisers, self.config.hops)

    def _folded(self, noisy: np.ndarray) -> np.ndarray:
        """Gossip ranks by one number: each candidate's score with its tie ticket folded in
        below the scores' resolution (score + ticket x half the smallest gap between distinct
        scores; the ticket alone when all scores are equal, as for ``random``), so keys order
        candidates exactly as (score, tie ticket) does."""
        return noisy + self.world.tie_tickets[self.candidates] * fold_deltas(noisy)[:, None]

    def _coordinate(self, tr: _Trajectory, active, pool, keys, ties, exact: Threshold, M: int):
        """Step 4's signal: each participant's threshold (score, ticket; NaN: no signal), who
        got one, and the published threshold (NaN for gossip)."""
        m, cell, size = tr.members, tr.cell, int(pool.sum())
        t_score, t_ticket = np.full(m.n, np.nan), np.full(m.n, np.nan)
        published = math.nan
        if tr.mode == "coordinator":
            reached = active.copy()
            t_score[reached], t_ticket[reached], published = exact.score, exact.ticket, exact.score
        elif tr.mode == "reach":
            reached = self._reach(m, active)
            heard = reached & m.candidate
            own = coalition_threshold(keys[heard], ties[heard], budget_count(cell.budget, int(heard.sum())))
            t_score[reached], t_ticket[reached], published = own.score, own.ticket, own.score
        else:  # gossip: each participant's own estimate of the threshold key; its key reaching it flips
            # Members aim at the budget's share of the pool they estimate (a count budget: M / pool).
            fraction = cell.budget if isinstance(cell.budget, float) else (M / size if size else 0.0)
            estimate = gossip_estimates(m.graph, active, keys, pool, fraction, steps=self.config.gossip_steps,
                                        bins=self.config.gossip_bins)
            reached = active & ~np.isnan(estimate)
            t_score[reached], t_ticket[reached] = estimate[reached], 0.0
        return t_score, t_ticket, reached, published

    def _collective(self, tr: _Trajectory, stay, complies, noisy, folded) -> None:
        """Steps 2-4 for one trajectory: participation, coordination, local decisions."""
        c, m, cell = self.config, tr.members, tr.cell
        with self._clock("participation"):
            joined, active, free = self._participation(tr, stay)
        pool = active & m.candidate
        size = int(pool.sum())
        M = budget_count(cell.budget, size)
        keys = np.full(m.n, np.nan)
        ties = m.ties
        if tr.mode == "gossip":  # one key per candidate, ties folded in: thresholds are keys alone
            keys[m.candidate] = folded[cell.method_index, m.column[m.candidate]]
            ties = np.zeros(m.n)
        else:
            keys[m.candidate] = noisy[cell.method_index, m.column[m.candidate]]
        exact = coalition_threshold(keys[pool], ties[pool], M)
        with self._clock("coordination"):
            t_score, t_ticket, reached, published = self._coordinate(tr, active, pool, keys, ties, exact, M)
        tr.signals.push((t_score, t_ticket))
        signal = tr.signals.at(c.staleness)
        if signal is None:  # nothing published that long ago yet: nobody acts
            signal = (np.full(m.n, np.nan), np.full(m.n, np.nan))
        # NaN thresholds compare False: a candidate without a signal does not flip.
        intended = decide(keys, ties, Threshold(*signal), eligible=pool)
        flips = intended & complies[m.local]
        error, rank_error = threshold_errors(keys[pool], ties[pool], signal[0][pool], signal[1][pool], exact, M)
        tr.joined, tr.active = joined, active
        tr.row = {
            "eligible": m.n, "organisers": int(m.organisers.sum()), "participants": int(active.sum()),
            "participant_share": float(active.sum() / max(1, self.minority.size)),
            "dropouts": int((joined & ~active).sum()), "free_riders": int(free.sum()), "candidates": size,
            "members_reached": int(reached.sum()), "m": int(M), "intended_flips": int(intended.sum()),
            "flips": int(flips.sum()), "flips_minus_m": int(flips.sum()) - int(M), "threshold": float(published),
            "threshold_error": error, "threshold_error_rank": rank_error,
            "_flips": flips, "_active": active, "_free": free,
        }

    def _first_fits(self) -> None:
        """Round 1's step 5: the base model and every trajectory's firm, as the one-shot run
        fits them (:func:`server.training.train_cells`: each distinct label vector once,
        warm-started along each (method, alpha, mode)'s budgets). It does not time each
        fit: round 1's ``retrain_seconds`` is NaN (the whole call is in ``timings``)."""
        y = self.world.prepared.y_train
        cells = [((tr.cell.method, tr.cell.alpha, tr.mode), tr.reports[-1] != y) for tr in self.trajectories]
        began = time.perf_counter()
        base_metrics, metrics, (base, firms) = train_cells(
            self.estimator, self.X, y, cells, self.world.test, warm=self.warm, executor=self.executor,
            on_fit=self.on_fit, return_models=True)
        self.timings["retrain"] += time.perf_counter() - began
        began = time.perf_counter()
        self.base_metrics, self.base_outcomes = base_metrics, _favourable(base, self.X_minority)
        outcomes = {id(base): self.base_outcomes}
        for tr, firm, cell_metrics in zip((self.base, *self.trajectories), (base, *firms), (base_metrics, *metrics)):
            if id(firm) not in outcomes:
                outcomes[id(firm)] = _favourable(firm, self.X_minority)
            tr.firm, tr.key, tr.metrics, tr.outcomes = firm, _labels_key(tr.reports[-1]), cell_metrics, outcomes[
                id(firm)]
            tr.seconds = math.nan
        self.timings["outcomes"] += time.perf_counter() - began

    def _retrain(self) -> None:
        """Step 5 after round 1: every trajectory's firm on the reports it holds, each distinct
        training set once, chains of equal start warm-started in order of growing positives."""
        if self.base.firm is None:
            return self._first_fits()
        test = self.world.test
        copies = None
        groups: dict = {}
        pending: dict = {}
        owners: list[tuple[_Trajectory, tuple]] = []
        for tr in (self.base, *self.trajectories):
            labels = np.concatenate(tr.reports) if len(tr.reports) > 1 else tr.reports[0]
            copies = len(tr.reports)
            key = _labels_key(labels)
            if key == tr.key:  # nothing new: the firm keeps its model
                tr.seconds = 0.0
                continue
            job = (id(tr.firm), key)
            owners.append((tr, job))
            if job in pending:
                continue
            pending[job] = None
            group = (id(tr.firm), BASE if tr.cell is None else (tr.cell.method, tr.cell.alpha, tr.mode))
            groups.setdefault(group, (tr.firm, []))[1].append((int(labels.sum()), job, labels))
        chains = [(start, sorted(chain, key=lambda item: item[0])) for start, chain in groups.values()]
        X = self._stacked_design(copies)
        tasks = [(start, X, [labels for _, _, labels in chain], test, self.warm) for start, chain in chains]
        began = time.perf_counter()
        outputs = self.executor.map(_fit_chain, tasks) if self.executor is not None else (
            _fit_chain(*task) for task in tasks)
        for (_, chain), results in zip(chains, outputs):
            for (_, job, _), result in zip(chain, results):
                pending[job] = result
            if self.on_fit:
                self.on_fit(len(chain))
        self.timings["retrain"] += time.perf_counter() - began
        began = time.perf_counter()
        outcomes = {}
        for tr, job in owners:
            firm, metrics, seconds = pending[job]
            tr.firm, tr.key, tr.metrics, tr.seconds = firm, job[1], metrics, seconds
            if id(firm) not in outcomes:
                outcomes[id(firm)] = _favourable(firm, self.X_minority)
            tr.outcomes = outcomes[id(firm)]
        self.timings["outcomes"] += time.perf_counter() - began

    def _row(self, tr: _Trajectory) -> dict:
        if tr.cell is None:
            cell = cell_columns(BASE, 0.0, 0.0)
            extra = {name: 0 for name in DYNAMICS_COLUMNS}
            extra.update(participant_share=0.0, threshold=math.nan, threshold_error=math.nan,
                         threshold_error_rank=math.nan, benefit_participants=math.nan,
                         benefit_free_riders=math.nan)
            params = {}
        else:
            cell = cell_columns(tr.cell.method, tr.cell.alpha, tr.cell.budget)
            m = tr.members
            extra = dict(tr.row)
            benefit = tr.outcomes[m.local] - self.base_outcomes[m.local]
            extra["benefit_participants"] = _mean(benefit[extra.pop("_active")])
            extra["benefit_free_riders"] = _mean(benefit[extra.pop("_free")])
            params = method_columns(self.params, tr.cell.method)
        extra["benefit_minority"] = float(np.mean(tr.outcomes - self.base_outcomes)) if tr.outcomes.size else math.nan
        extra["retrain_seconds"] = tr.seconds
        columns = {k: cell[k] for k in ("method", "alpha", "budget", "budget_kind")}
        tr.last = {"coordination": tr.mode if tr.cell is not None else self.config.coordination[0],
                   "round": self.round, **columns, **params, **{k: extra[k] for k in DYNAMICS_COLUMNS}, **tr.metrics}
        return tr.last

    # ------------------------------------------------------------------ collected

    def table(self, common: dict | None = None) -> pd.DataFrame:
        """The per-round table: one row per coordination x cell x round, plus the base rows."""
        return pd.DataFrame([{**(common or {}), **row} for row in self.rows])

    def last_rows(self, common: dict) -> list[dict]:
        """The last round's rows of the first coordination mode, as :func:`simulations.engine.state_rows`
        writes them (the one-shot table's columns)."""
        mode = self.config.coordination[0]
        rows = [{**common, **cell_columns(BASE, 0.0, 0.0), **self.base.metrics}]
        for tr in self.trajectories:
            if tr.mode != mode:
                continue
            r, cell = tr.last, tr.cell
            rows.append({**common, **cell_columns(cell.method, cell.alpha, cell.budget, n_members=r["eligible"],
                                                  pool_size=r["candidates"], m=r["m"], flips=r["flips"],
                                                  threshold=r["threshold"]),
                         **method_columns(self.params, cell.method), **tr.metrics})
        return rows


def setup(scenario, world: World) -> "CollectiveDynamics":
    """The model's setup for ``world`` and nothing more: the members' graph and the
    organisers, drawn as the first round draws them (no fit)."""
    c = scenario.collective
    state = RunState(round=0, world=world, grid=CellGrid.of(c.methods, c.alphas, c.budgets), params=c.scorer_params())
    return CollectiveDynamics(scenario, state, estimator=make_estimator(random_state=0), setup_only=True)


def check_world(scenario, world: World, source: str = "scenario") -> None:
    """Build what the first round builds from ``world`` (:func:`setup`) so a graph that
    cannot be drawn for these users (an edge list naming unknown users, ``m`` beyond their
    number) is one line before a run writes anything."""
    try:
        setup(scenario, world)
    except CollectiveFairnessError as exc:
        raise type(exc)(f"{source}: {exc}") from None


def count_fits(scenario) -> int:
    """An upper bound on firm fits per seed (for progress bars)."""
    c = scenario.collective
    cells = len(c.methods) * len(c.alphas) * len(c.budgets)
    per_round = cells * len(scenario.dynamics.coordination)
    pilot = (1 + cells) if c.validation else 0
    return 1 + per_round * scenario.dynamics.rounds + pilot


def run_seed(scenario, seed: int, *, dataset=None, executor: Executor | None = None,
             on_fit: Callable[[int], None] | None = None, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One seed of a ``[dynamics]`` scenario: (the last round's ``runs.csv`` rows, the
    per-round table)."""
    dataset = dataset if dataset is not None else load_data(scenario, seed=seed)
    executor = executor or make_executor(scenario.engine.executor, scenario.engine.n_jobs)
    state = initial_state(scenario, dataset, seed)
    estimator = make_estimator(scenario.firm.model, scenario.firm.params, random_state=state.world.firm_seed)
    model = CollectiveDynamics(scenario, state, estimator=estimator, executor=executor, on_fit=on_fit).run()
    common = {**config_columns(scenario, dataset, backend="vectorised"), "seed": seed,
              "n_train": state.world.n_users, "n_minority": int(state.world.minority.sum())}
    rows = model.last_rows(common)
    if scenario.collective.validation:
        validation = pilot_columns(state, scenario.collective.validation, estimator=estimator,
                                   warm_start=scenario.engine.warm_start, executor=executor, on_fit=on_fit)
        rows = [{**row, **val} for row, val in zip(rows, validation)]
    return pd.DataFrame(rows), model.table(common)


def run_scenario(scenario, *, n_jobs: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every seed in memory: (runs table, per-round table)."""
    if scenario.dynamics is None:
        raise ConfigError("scenario has no [dynamics] section; allowed: a scenario with [dynamics] (or "
                          "simulations.engine.run_scenario)")
    executor = make_executor(scenario.engine.executor, scenario.engine.n_jobs if n_jobs is None else n_jobs)
    runs, rounds = zip(*(run_seed(scenario, seed, executor=executor) for seed in scenario.seeds))
    return pd.concat(runs, ignore_index=True), pd.concat(rounds, ignore_index=True)
