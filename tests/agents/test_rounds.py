"""agents.rounds.reached: coordination 'reach', checked by hand on small graphs (the
vectorised model and the Flower coordinator both call it, so its equality tests cannot
catch a mistake shared by both)."""

import numpy as np
from scipy import sparse

from agents.rounds import reached


def path(n):
    """0 - 1 - 2 - ... - (n-1)."""
    rows = np.arange(n - 1)
    a = sparse.coo_matrix((np.ones(n - 1), (rows, rows + 1)), shape=(n, n))
    return (a + a.T).tocsr()


def test_hops_count_edges_from_the_organisers():
    g, active = path(6), np.ones(6, dtype=bool)
    organisers = np.zeros(6, dtype=bool)
    organisers[2] = True
    assert reached(g, active, organisers, 0).tolist() == [0, 0, 1, 0, 0, 0]
    assert reached(g, active, organisers, 1).tolist() == [0, 1, 1, 1, 0, 0]
    assert reached(g, active, organisers, 2).tolist() == [1, 1, 1, 1, 1, 0]
    assert reached(g, active, organisers, 9).all()


def test_messages_travel_between_participants_only():
    g, organisers = path(5), np.array([1, 0, 0, 0, 0], dtype=bool)
    active = np.array([1, 1, 0, 1, 1], dtype=bool)  # 2 sits the round out: 3 and 4 are cut off
    assert reached(g, active, organisers, 4).tolist() == [1, 1, 0, 0, 0]
    # an organiser who does not act reaches nobody
    assert not reached(g, active & ~organisers, organisers, 4).any()


def test_the_complete_graph_reaches_every_participant_in_one_hop():
    active, organisers = np.array([1, 0, 1, 1], dtype=bool), np.array([0, 0, 1, 0], dtype=bool)
    assert reached(None, active, organisers, 1).tolist() == [1, 0, 1, 1]
    assert reached(None, active, organisers, 0).tolist() == [0, 0, 1, 0]
