"""The collective's rule, composed once: members -> pool -> M -> threshold -> flips.

Two halves, so the rule can run where the information is:

* the **coordinator half** (:func:`membership_cutoffs`, :func:`publish`) turns
  what members send -- membership tickets, then the candidates' (member ticket,
  tie ticket, scores) -- into the published :class:`~agents.protocol.Signal`: one membership
  cutoff per alpha and one threshold per cell of the grid;
* the **user half** (:func:`decide_cells`) turns the signal into each user's
  decision for every cell, from that user's own tickets and scores only.

The vectorised engine calls both halves over all users at once, a Flower
coordinator node the first and each ClientApp the second for its own users;
the comparison's adaptive collective calls them with some candidates held
back. Every function is vectorised over users and cells and independent of how
users are grouped, so one user, a shard or everyone decide identically.
"""

from __future__ import annotations

import numpy as np

from .decision import Threshold, coalition_threshold, decide, member_count, membership_cutoff
from .protocol import CellGrid, Signal, budget_count

__all__ = ["decide_cells", "membership_cutoffs", "publish"]


def membership_cutoffs(minority_tickets, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Membership cutoff and member count per alpha, from the tickets of every minority
    user who signed up (a user is a member at alpha iff its ticket < the cutoff).

    Collectives are nested: a member at a smaller alpha is one at every larger alpha.
    """
    tickets = np.asarray(minority_tickets, dtype=np.float64).ravel()
    cutoffs = np.array([membership_cutoff(tickets, member_count(float(a), tickets.size)) for a in alphas],
                       dtype=np.float64)
    n_members = np.array([np.count_nonzero(tickets < c) for c in cutoffs], dtype=np.int64)
    return cutoffs, n_members


def publish(grid: CellGrid, cutoffs, n_members, member_tickets, tie_tickets, scores, *, held_back=None,
            participating=None, per_cell: bool = False) -> Signal:
    """The thresholds of every cell from the candidates' tickets and scores.

    Candidates are members (at the grid's largest alpha) whose label is 0;
    ``scores`` has one row per method of the grid and one column per candidate.
    The pool of a cell is the candidates whose member ticket is below its
    alpha's cutoff; M = ``budget_count(budget, pool)``. ``held_back`` (one row
    per alpha, one column per candidate) removes candidates from a cell's
    ranking without shrinking its pool: M is then capped by those left.
    ``participating`` (same shape; many rounds, :mod:`agents.rounds`) keeps in a
    cell's pool only the candidates acting this round at its alpha; with ``per_cell``
    (benefit-cost: who acts differs per cell) it has one row per cell instead.
    """
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    member_tickets = np.asarray(member_tickets, dtype=np.float64).ravel()
    tie_tickets = np.asarray(tie_tickets, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).reshape(len(grid.methods), member_tickets.size)
    n = len(grid)
    score, ticket = np.empty(n), np.empty(n)
    pool_size, m_out = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    pools = [member_tickets < c for c in cutoffs]
    row = np.arange(n) if per_cell else np.asarray(grid.alpha_of)
    if per_cell:
        pools = [pools[i] for i in grid.alpha_of]
    if participating is not None:
        pools = [p & np.asarray(a, dtype=bool) for p, a in zip(pools, participating)]
    ranked = pools if held_back is None else [p & ~np.asarray(h, dtype=bool) for p, h in zip(pools, held_back)]
    for cell in grid:
        pool, idx = pools[row[cell.index]], np.flatnonzero(ranked[row[cell.index]])
        size = int(np.count_nonzero(pool))
        m = min(budget_count(cell.budget, size), idx.size)
        t = coalition_threshold(scores[cell.method_index, idx], tie_tickets[idx], m)
        score[cell.index], ticket[cell.index], pool_size[cell.index], m_out[cell.index] = t.score, t.ticket, size, m
    return Signal(cutoffs, score, ticket, np.asarray(n_members, dtype=np.int64), pool_size, m_out)


def decide_cells(grid: CellGrid, signal: Signal, member_tickets, tie_tickets, scores, *, held_back=None,
                 per_cell: bool = False) -> np.ndarray:
    """Every candidate's decision in every cell: a (cells x candidates) bool array.

    Each column is one candidate (a user with label 0) and uses only that
    user's own tickets and scores (one row per method) and the public signal:
    it flips iff it is a member at the cell's alpha, is not ``held_back`` there,
    and its (score, tie ticket) reaches the cell's threshold. ``held_back`` has one row per
    alpha, or with ``per_cell`` one per cell.
    """
    member_tickets = np.asarray(member_tickets, dtype=np.float64).ravel()
    tie_tickets = np.asarray(tie_tickets, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).reshape(len(grid.methods), member_tickets.size)
    alpha_of = grid.alpha_of
    eligible = member_tickets[None, :] < np.asarray(signal.cutoffs)[alpha_of][:, None]
    if held_back is not None:
        eligible &= ~np.asarray(held_back, dtype=bool)[slice(None) if per_cell else alpha_of]
    threshold = Threshold(np.asarray(signal.score, dtype=np.float64)[:, None],
                          np.asarray(signal.ticket, dtype=np.float64)[:, None])
    return decide(scores[grid.method_of], tie_tickets[None, :], threshold, eligible=eligible)
