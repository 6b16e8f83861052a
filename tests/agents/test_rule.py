"""The collective's rule (agents.rule) against a plain loop over its primitives."""

import numpy as np
import pytest

from agents.decision import budget_count, coalition_threshold, decide, member_count, membership_cutoff
from agents.protocol import CellGrid, Signal
from agents.rule import decide_cells, membership_cutoffs, publish

GRID = CellGrid.of(["a", "b"], [0.2, 0.5, 1.0], [0.0, 0.3, 1.0, 4])


def _population(n=400, seed=1):
    rng = np.random.default_rng(seed)
    member = rng.random(n)
    tie = rng.random(n)
    # Coarse scores so that ties in score are common and the tie tickets matter.
    scores = np.round(rng.random((len(GRID.methods), n)), 1)
    return member, tie, scores


def _loop(member, tie, scores, held_back=None):
    """Cell by cell with agents.decision only: (threshold score, pool, M, flips) per cell."""
    out = []
    for cell in GRID:
        cutoff = membership_cutoff(member, member_count(cell.alpha, member.size))
        pool = member < cutoff
        ranked = pool & ~held_back[cell.alpha_index] if held_back is not None else pool
        idx = np.flatnonzero(ranked)
        m = min(budget_count(cell.budget, int(pool.sum())), idx.size)
        t = coalition_threshold(scores[cell.method_index, idx], tie[idx], m)
        out.append((t.score, int(pool.sum()), m, decide(scores[cell.method_index], tie, t, eligible=ranked)))
    return out


@pytest.mark.parametrize("with_held_back", [False, True])
def test_publish_and_decide_equal_the_plain_loop(with_held_back):
    member, tie, scores = _population()
    held_back = np.random.default_rng(2).random((len(GRID.alphas), member.size)) < 0.3 if with_held_back else None
    cutoffs, n_members = membership_cutoffs(member, GRID.alphas)
    signal = publish(GRID, cutoffs, n_members, member, tie, scores, held_back=held_back)
    flips = decide_cells(GRID, signal, member, tie, scores, held_back=held_back)
    for cell, (score, pool, m, expected) in zip(GRID, _loop(member, tie, scores, held_back)):
        assert signal.score[cell.index] == score
        assert (signal.pool_size[cell.index], signal.m[cell.index]) == (pool, m)
        np.testing.assert_array_equal(flips[cell.index], expected)
        assert flips[cell.index].sum() == m  # exactly M flip, ties or not


def test_a_shard_decides_like_everyone():
    member, tie, scores = _population()
    cutoffs, n_members = membership_cutoffs(member, GRID.alphas)
    signal = publish(GRID, cutoffs, n_members, member, tie, scores)
    everyone = decide_cells(GRID, signal, member, tie, scores)
    for shard in (slice(0, 1), slice(7, 50), slice(50, None)):
        np.testing.assert_array_equal(decide_cells(GRID, signal, member[shard], tie[shard], scores[:, shard]),
                                      everyone[:, shard])


def test_nested_collectives_and_no_signal():
    member, tie, scores = _population()
    cutoffs, n_members = membership_cutoffs(member, GRID.alphas)
    assert list(n_members) == [80, 200, 400] and np.all(np.diff(cutoffs) > 0)
    nobody = Signal.none(GRID)
    assert not nobody.reachable
    assert not decide_cells(GRID, nobody, member, tie, scores).any()


def test_grid_order_and_wire_round_trip():
    cells = list(GRID)
    assert [(c.method, c.alpha, c.budget) for c in cells[:5]] == [
        ("a", 0.2, 0.0), ("a", 0.2, 0.3), ("a", 0.2, 1.0), ("a", 0.2, 4), ("a", 0.5, 0.0)]
    assert [c.index for c in cells] == list(range(len(GRID)))
    np.testing.assert_array_equal(GRID.method_of, [c.method_index for c in cells])
    np.testing.assert_array_equal(GRID.alpha_of, [c.alpha_index for c in cells])
    for back in (CellGrid.from_arrays(GRID.to_arrays()), CellGrid.from_config(GRID.to_config())):
        assert back == GRID and isinstance(back.budgets[3], int) and isinstance(back.budgets[2], float)
