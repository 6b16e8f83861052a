"""Social graphs: seeded, symmetric, the requested degree and homophily, and one
clear line for every bad request."""

import numpy as np
import pytest
import scipy.sparse as sp

from agents.errors import ConfigError, DataError
from simulations.graphs import KINDS, build_graph, erdos_renyi_edges

PARAMS = {
    "erdos-renyi": {"mean_degree": 8},
    "barabasi-albert": {"m": 3},
    "watts-strogatz": {"k": 6, "p": 0.1},
    "sbm": {"groups": np.arange(600) % 3, "p_in": 0.02, "p_out": 0.002},
}


def _check_simple(a, n):
    assert isinstance(a, sp.csr_matrix) and a.shape == (n, n) and a.dtype == bool
    assert (a != a.T).nnz == 0  # symmetric
    assert not a.diagonal().any()  # no self loops
    assert np.all(a.data)


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_same_seed_same_graph_other_seed_other_graph(kind):
    n = 600
    a = build_graph(kind, n, rng_or_seed=7, **PARAMS[kind])
    _check_simple(a, n)
    b = build_graph(kind, n, rng_or_seed=7, **PARAMS[kind])
    c = build_graph(kind, n, rng_or_seed=8, **PARAMS[kind])
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    # A Generator and a SeedSequence are accepted and are reproducible too.
    g1 = build_graph(kind, n, rng_or_seed=np.random.default_rng(3), **PARAMS[kind])
    g2 = build_graph(kind, n, rng_or_seed=np.random.default_rng(3), **PARAMS[kind])
    s1 = build_graph(kind, n, rng_or_seed=np.random.SeedSequence(3), **PARAMS[kind])
    s2 = build_graph(kind, n, rng_or_seed=np.random.SeedSequence(3), **PARAMS[kind])
    assert (g1 != g2).nnz == 0 and (s1 != s2).nnz == 0


def test_mean_degrees():
    n = 3000
    for kind, params, expected in [
        ("erdos-renyi", {"mean_degree": 10}, 10),
        ("barabasi-albert", {"m": 4}, 2 * 4),  # each new user brings m edges
        ("watts-strogatz", {"k": 10, "p": 0.05}, 10),  # rewiring keeps the count
    ]:
        a = build_graph(kind, n, rng_or_seed=1, **params)
        _check_simple(a, n)
        assert abs(a.nnz / n - expected) < 0.05 * expected, kind
    assert build_graph("complete", n, rng_or_seed=1) is None
    assert build_graph(None, n, rng_or_seed=1) is None


@pytest.mark.parametrize("sampler", ["networkx", "numpy"])
def test_erdos_renyi_samplers_share_the_distribution(sampler):
    # Independent checks of G(n, p): edge count, degree variance and triangle count
    # against their binomial expectations (a sampler with repeated or clustered
    # pairs fails the last two).
    n, d = 3000, 10.0
    p = d / (n - 1)
    pairs = n * (n - 1) / 2
    a = build_graph("erdos-renyi", n, rng_or_seed=11, mean_degree=d, sampler=sampler)
    _check_simple(a, n)
    edges = a.nnz / 2
    assert abs(edges - pairs * p) < 4 * np.sqrt(pairs * p * (1 - p))
    deg = np.diff(a.indptr)
    assert abs(deg.var() / ((n - 1) * p * (1 - p)) - 1) < 0.1
    af = a.astype(np.float64)
    triangles = (af @ af).multiply(af).sum() / 6
    expected = n * (n - 1) * (n - 2) / 6 * p**3
    assert abs(triangles - expected) < 5 * np.sqrt(expected)


def test_vectorised_sampler_edges_are_distinct_pairs():
    u, v = erdos_renyi_edges(500, 0.2, np.random.default_rng(0))  # dense: many repeats to reject
    assert np.all(u < v) and np.unique(u * 500 + v).size == u.size
    assert abs(u.size - 0.2 * 500 * 499 / 2) < 4 * np.sqrt(500 * 499 / 2 * 0.2 * 0.8)
    # Every pair equally likely: first users are not favoured.
    counts = np.bincount(np.r_[u, v], minlength=500)
    assert abs(counts[:250].mean() - counts[250:].mean()) < 2


def test_sbm_homophily():
    n = 2000
    groups = np.where(np.arange(n) % 5 == 0, "minority", "majority")
    a = build_graph("sbm", n, rng_or_seed=2, groups=groups, p_in=0.01, p_out=0.001).tocoo()
    _check_simple(a.tocsr(), n)
    same = groups[a.row] == groups[a.col]
    # Share of possible within-group pairs linked, against between-group pairs.
    sizes = np.array([(groups == g).sum() for g in ("minority", "majority")])
    within_pairs = (sizes * (sizes - 1)).sum()  # ordered pairs, as the coo rows are
    between_pairs = n * n - n - within_pairs
    p_in, p_out = same.sum() / within_pairs, (~same).sum() / between_pairs
    assert abs(p_in - 0.01) < 0.001 and abs(p_out - 0.001) < 0.0003 and p_in > 5 * p_out


def test_edge_list(tmp_path):
    f = tmp_path / "edges.txt"
    f.write_text("# who knows whom\n10 11\n11 12  # a comment\n\n12 12\n11 10\n")
    a = build_graph("edge-list", 3, rng_or_seed=0, path=f, user_ids=[10, 11, 12])
    _check_simple(a, 3)
    np.testing.assert_array_equal(a.toarray(), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    f.write_text("0 1\n1 2\n")
    np.testing.assert_array_equal(build_graph("edge-list", 3, rng_or_seed=0, path=f).toarray(),
                                  [[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def test_edge_list_errors(tmp_path):
    f = tmp_path / "edges.txt"
    f.write_text("10 11\n# fine\n11 99\n12 98\n")
    with pytest.raises(DataError, match=r"line 3: unknown user 99; allowed: the run's 3 user ids \(10\.\.12\)"):
        build_graph("edge-list", 3, rng_or_seed=0, path=f, user_ids=[10, 11, 12])
    f.write_text("10 11\n11 x\n")
    with pytest.raises(DataError, match="line 2: expected two integer user ids"):
        build_graph("edge-list", 3, rng_or_seed=0, path=f, user_ids=[10, 11, 12])
    with pytest.raises(DataError, match="cannot be read"):
        build_graph("edge-list", 3, rng_or_seed=0, path=tmp_path / "missing.txt")


@pytest.mark.parametrize("kind, n, params, message", [
    ("small-world", 10, {}, "unknown graph kind 'small-world'; allowed: " + ", ".join(KINDS)),
    ("erdos-renyi", 10, {"mean_degree": 10}, r"mean_degree must be in \[0, n - 1\] = \[0, 9\], got 10"),
    ("erdos-renyi", 10, {"mean_degree": -1}, r"mean_degree must be in \[0, n - 1\]"),
    ("erdos-renyi", 10, {"mean_degree": 2, "sampler": "gpu"}, "allowed: auto, networkx, numpy"),
    ("erdos-renyi", 10, {}, "needs parameter 'mean_degree'"),
    ("erdos-renyi", 10, {"mean_degree": 2, "k": 3}, "unknown erdos-renyi parameter 'k'; allowed: mean_degree, sampler"),
    ("erdos-renyi", -1, {"mean_degree": 2}, "number of users must be an integer"),
    ("erdos-renyi", 2.5, {"mean_degree": 1}, "number of users must be an integer"),
    ("watts-strogatz", 10, {"k": 4, "p": 1.5}, r"p must be a probability in \[0, 1\], got 1.5"),
    ("watts-strogatz", 10, {"k": 3, "p": 0.1}, "k must be even"),
    ("watts-strogatz", 10, {"k": 2.0, "p": 0.1}, r"k must be an integer in \[0, 9\]"),
    ("barabasi-albert", 10, {"m": 0}, r"m must be an integer in \[1, 9\]"),
    ("sbm", 10, {"groups": [0] * 9, "p_in": 0.1, "p_out": 0.0}, r"one label per user \(10\)"),
    ("sbm", 10, {"groups": [0] * 10, "p_in": 0.1, "p_out": -0.1}, r"p_out must be a probability"),
])
def test_bad_requests_are_one_clear_line(kind, n, params, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_graph(kind, n, rng_or_seed=0, **params)
    assert "\n" not in str(info.value)


def test_seed_must_be_explicit():
    with pytest.raises(ConfigError, match="graph seed"):
        build_graph("erdos-renyi", 10, rng_or_seed=None, mean_degree=2)


def test_auto_sampler_switches_at_the_documented_size(monkeypatch):
    import simulations.graphs as graphs

    def build(sampler):
        return build_graph("erdos-renyi", 400, rng_or_seed=5, mean_degree=6, sampler=sampler)

    assert (build("auto") != build("networkx")).nnz == 0
    monkeypatch.setattr(graphs, "VECTORISED_FROM", 400)
    assert (build("auto") != build("numpy")).nnz == 0 and (build("numpy") != build("networkx")).nnz > 0


def test_an_edge_list_of_the_whole_population_keeps_the_edges_among_the_runs_users(tmp_path):
    """With known_ids (every row of the data set) the file is the social graph of everyone: each
    seed keeps the edges among its own users and drops the rest, so one file serves every seed;
    an id that is no row at all is still one clear error."""
    from simulations.graphs import build_graph

    path = tmp_path / "edges.txt"
    path.write_text("10 11\n11 12\n12 99\n5 6\n")
    ids = np.array([12, 11, 10])  # this run's users: positions 0, 1, 2
    g = build_graph("edge-list", 3, rng_or_seed=0, path=path, user_ids=ids, known_ids=np.arange(100))
    assert sorted(map(tuple, np.argwhere(g.toarray()))) == [(0, 1), (1, 0), (1, 2), (2, 1)]  # 12-11, 11-10
    path.write_text("10 11\n11 100\n")
    with pytest.raises(DataError, match=r"line 2: unknown user 100; allowed: the data set's row ids \(0..99\)"):
        build_graph("edge-list", 3, rng_or_seed=0, path=path, user_ids=ids, known_ids=np.arange(100))
    with pytest.raises(DataError, match="unknown user"):  # without known_ids every id must be a user
        build_graph("edge-list", 3, rng_or_seed=0, path=tmp_path / "edges.txt", user_ids=ids)
