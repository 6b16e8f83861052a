"""Who sees whom: social graphs among a run's users, built from the run's seed.

A graph is a symmetric ``scipy.sparse.csr_matrix`` of bools over user positions
``0..n-1`` with no self loops, the form :mod:`agents.participation` and
:mod:`agents.gossip` take. ``None`` stands for everyone seeing everyone
(kind ``"complete"``): no n x n matrix is ever built for it.

Kinds and their parameters (:data:`KINDS`):

* ``erdos-renyi`` (``mean_degree``): every pair linked independently with
  probability ``mean_degree / (n - 1)``. Up to :data:`VECTORISED_FROM` users
  networkx's ``fast_gnp_random_graph`` draws it; from there on a vectorised
  sampler of the same distribution does (``sampler="networkx"|"numpy"`` forces
  one). At mean degree 10 networkx took 9.7 s and 0.54 GB peak RSS at n = 3·10^5
  and 32 s and 1.7 GB at 10^6, the sampler 0.8 s / 0.20 GB and 3.0 s / 0.51 GB
  (``benchmarks/graphs_gossip.py``, 2 cores, imports included). The two samplers
  give different graphs for the same seed, with the same distribution.
* ``barabasi-albert`` (``m``): preferential attachment, ``m`` edges per new user.
* ``watts-strogatz`` (``k``, ``p``): a ring where each user links to its ``k``
  nearest neighbours, each edge rewired with probability ``p`` (small ``p``:
  clustered, long paths; gossip is slow there).
* ``sbm`` (``groups``, ``p_in``, ``p_out``): stochastic block model, linking
  users of the same group label with ``p_in`` and of different labels with
  ``p_out`` (homophily when ``p_in > p_out``); labels come from the caller, e.g.
  minority/majority or sub-communities.
* ``edge-list`` (``path``, optional ``user_ids``, ``known_ids``): a text file of
  ``u v`` lines naming user ids (``user_ids[i]`` is the id of position ``i``;
  without it ids are positions). ``#`` starts a comment; self loops and repeated
  pairs are dropped. With ``known_ids`` the file may name any known id, and edges
  leaving ``user_ids`` are dropped (the subgraph among the run's users).
* ``complete`` (or ``None``): everyone sees everyone; returns ``None``.

Randomness: networkx generators and the vectorised sampler get one integer seed
drawn from the given ``Generator``, ``SeedSequence`` or int, so the same seed
gives the same graph.
"""

from __future__ import annotations

import itertools
from numbers import Integral, Real
from pathlib import Path

import networkx as nx
import numpy as np
import scipy.sparse as sp

from agents.errors import ConfigError, DataError
from agents.validation import stream_int

__all__ = ["KINDS", "VECTORISED_FROM", "build_graph", "erdos_renyi_edges", "graph_seed"]

# Parameters each kind takes: (required, optional).
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "complete": ((), ()),
    "erdos-renyi": (("mean_degree",), ("sampler",)),
    "barabasi-albert": (("m",), ()),
    "watts-strogatz": (("k", "p"), ()),
    "sbm": (("groups", "p_in", "p_out"), ()),
    "edge-list": (("path",), ("user_ids", "known_ids")),
}
VECTORISED_FROM = 100_000  # users from which erdos-renyi uses the vectorised sampler
SAMPLERS = ("auto", "networkx", "numpy")


def graph_seed(rng_or_seed) -> int:
    """An int seed in [0, 2**31) from a ``Generator``, ``SeedSequence`` or int."""
    if isinstance(rng_or_seed, np.random.SeedSequence):
        return stream_int(rng_or_seed)
    if isinstance(rng_or_seed, np.random.Generator):
        return int(rng_or_seed.integers(0, 2**31))
    if isinstance(rng_or_seed, Integral) and not isinstance(rng_or_seed, bool) and rng_or_seed >= 0:
        return int(rng_or_seed) % 2**31
    raise ConfigError("graph seed must be a numpy Generator, SeedSequence or non-negative int, "
                      f"got {rng_or_seed!r}")


# ---------------------------------------------------------------- validation

def _count(kind, name, value, lo, hi) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= value <= hi:
        raise ConfigError(f"{kind} {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _probability(kind, name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{kind} {name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _validate(kind, n, params) -> dict:
    """Every check of a graph request, one clear line each; returns clean parameters."""
    if kind is None:
        kind = "complete"
    if kind not in KINDS:
        raise ConfigError(f"unknown graph kind {kind!r}; allowed: {', '.join(KINDS)}")
    n = _count("graph", "number of users", n, 0, 2**31 - 1)
    required, optional = KINDS[kind]
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(required + optional) or "none"
        raise ConfigError(f"unknown {kind} parameter {unknown[0]!r}; allowed: {allowed}")
    missing = [name for name in required if params.get(name) is None]
    if missing:
        raise ConfigError(f"{kind} needs parameter {missing[0]!r} (all of: {', '.join(required)})")
    out = {"kind": kind, "n": n}
    if kind == "erdos-renyi":
        d = params["mean_degree"]
        if isinstance(d, bool) or not isinstance(d, Real) or not 0 <= d <= max(n - 1, 0):
            raise ConfigError(f"erdos-renyi mean_degree must be in [0, n - 1] = [0, {max(n - 1, 0)}], got {d!r}")
        sampler = params.get("sampler") or "auto"
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown erdos-renyi sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        out.update(mean_degree=float(d), sampler=sampler)
    elif kind == "barabasi-albert":
        out["m"] = _count(kind, "m", params["m"], 1, max(n - 1, 1))
        if n < 2:
            raise ConfigError(f"barabasi-albert needs at least 2 users, got {n}")
    elif kind == "watts-strogatz":
        k = _count(kind, "k", params["k"], 0, max(n - 1, 0))
        if k % 2:
            raise ConfigError(f"watts-strogatz k must be even (k/2 neighbours on each side), got {k}")
        out.update(k=k, p=_probability(kind, "p", params["p"]))
    elif kind == "sbm":
        groups = np.asarray(params["groups"])
        if groups.shape != (n,):
            raise ConfigError(f"sbm groups must give one label per user ({n}), got shape {groups.shape}")
        out.update(groups=groups, p_in=_probability(kind, "p_in", params["p_in"]),
                   p_out=_probability(kind, "p_out", params["p_out"]))
    elif kind == "edge-list":
        ids = params.get("user_ids")
        ids = np.arange(n) if ids is None else np.asarray(ids)
        if ids.shape != (n,) or (ids.size and ids.dtype.kind not in "iu"):
            raise ConfigError(f"edge-list user_ids must be {n} integer ids, got shape {ids.shape} dtype {ids.dtype}")
        if np.unique(ids).size != n:
            raise ConfigError("edge-list user_ids must be distinct")
        known = params.get("known_ids")
        out.update(path=Path(params["path"]), user_ids=ids,
                   known_ids=None if known is None else np.asarray(known, dtype=np.int64))
    return out


# ---------------------------------------------------------------- building

def _from_edges(u, v, n: int) -> sp.csr_matrix:
    """Symmetric bool CSR from undirected edges (self loops dropped, repeats merged)."""
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    keep = u != v
    u, v = u[keep], v[keep]
    rows, cols = np.concatenate((u, v)), np.concatenate((v, u))
    idx = np.int32 if n < 2**31 else np.int64
    a = sp.coo_matrix((np.ones(rows.size, dtype=bool), (rows.astype(idx), cols.astype(idx))), shape=(n, n))
    out = a.tocsr()  # sums repeats: for bools that is OR
    out.sort_indices()
    return out


def _from_networkx(graph: nx.Graph, n: int) -> sp.csr_matrix:
    # Faster and leaner than networkx.to_scipy_sparse_array for integer-labelled nodes.
    flat = np.fromiter(itertools.chain.from_iterable(graph.edges()), dtype=np.int64,
                       count=2 * graph.number_of_edges())
    return _from_edges(flat[0::2], flat[1::2], n)


def erdos_renyi_edges(n: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The edges ``(u, v)`` with ``u < v`` of a G(n, p) graph, vectorised.

    G(n, p) given its number of edges is uniform over graphs with that many
    edges, so the sampler draws the count from Binomial(n(n-1)/2, p), then that
    many distinct pairs uniformly: ordered pairs with u != v are uniform over
    unordered pairs, and the first ``m`` distinct pairs of an i.i.d. sequence are
    a uniform m-subset. Memory and time are O(edges), never O(n^2).
    """
    pairs = n * (n - 1) // 2
    if not pairs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    m = int(rng.binomial(pairs, p))
    codes = np.empty(0, dtype=np.int64)
    while codes.size < m:
        need = m - codes.size
        draw = rng.integers(0, n, size=(need + need // 100 + 16, 2), dtype=np.int64)
        draw = draw[draw[:, 0] != draw[:, 1]]
        new = np.minimum(draw[:, 0], draw[:, 1]) * n + np.maximum(draw[:, 0], draw[:, 1])
        allc = np.concatenate((codes, new))
        _, first = np.unique(allc, return_index=True)
        codes = allc[np.sort(first)][:m]  # distinct, in order of first appearance
    return codes // n, codes % n


def _edge_list(path: Path, ids: np.ndarray, n: int, known: np.ndarray | None = None) -> sp.csr_matrix:
    """The graph among ``ids`` of an edge-list file. With ``known`` (every id the file may
    name, e.g. all the dataset's rows) an edge touching a known user who is not among ``ids``
    (a test-set or majority user of this seed) is dropped: the file is the social graph of
    the whole population, the run sees the part among its users. Without ``known`` every
    id must be one of ``ids``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"edge list {path} cannot be read: {exc}") from None
    us, vs, lines = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        try:
            if len(tokens) != 2:
                raise ValueError
            u, v = int(tokens[0]), int(tokens[1])
        except ValueError:
            raise DataError(f"edge list {path} line {number}: expected two integer user ids 'u v', "
                            f"got {line[:60]!r}") from None
        us.append(u)
        vs.append(v)
        lines.append(number)
    u, v = np.array(us, dtype=np.int64), np.array(vs, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order].astype(np.int64)

    def positions(x):
        if not n:
            return x, np.zeros(x.size, dtype=bool)
        at = np.searchsorted(sorted_ids, x).clip(0, n - 1)
        return order[at], sorted_ids[at] == x

    pu, fu = positions(u)
    pv, fv = positions(v)
    if known is not None:
        unknown = ~np.isin(u, known) | ~np.isin(v, known)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            who = u[i] if not np.isin(u[i], known) else v[i]
            raise DataError(f"edge list {path} line {lines[i]}: unknown user {who}; allowed: the data set's "
                            f"row ids ({int(known.min())}..{int(known.max())})")
        inside = fu & fv  # both ends are this run's users; the rest of the population is not in its graph
        pu, pv, fu, fv = pu[inside], pv[inside], fu[inside], fv[inside]
        lines = [line for line, keep in zip(lines, inside) if keep]
        u, v = u[inside], v[inside]
    bad = np.flatnonzero(~(fu & fv))
    if bad.size:
        i = bad[0]
        who = u[i] if not fu[i] else v[i]
        raise DataError(f"edge list {path} line {lines[i]}: unknown user {who}; allowed: the run's "
                        f"{n} user ids" + (f" ({sorted_ids[0]}..{sorted_ids[-1]})" if n else ""))
    return _from_edges(pu, pv, n)


def build_graph(kind, n: int, *, rng_or_seed, **params) -> sp.csr_matrix | None:
    """The adjacency among ``n`` users for a graph ``kind`` (see the module doc).

    Returns a symmetric bool ``csr_matrix`` without self loops, or ``None`` for
    ``complete``. Every bad parameter is one :class:`ConfigError` line naming the
    allowed values; an edge list naming an unknown user, or a malformed line, is
    a :class:`DataError` naming the first bad line.
    """
    cfg = _validate(kind, n, params)
    kind, n = cfg["kind"], cfg["n"]
    if kind == "complete":
        return None
    if kind == "edge-list":
        return _edge_list(cfg["path"], cfg["user_ids"], n, cfg["known_ids"])
    seed = graph_seed(rng_or_seed)
    if kind == "erdos-renyi":
        p = cfg["mean_degree"] / (n - 1) if n > 1 else 0.0
        sampler = cfg["sampler"]
        if sampler == "numpy" or (sampler == "auto" and n >= VECTORISED_FROM):
            return _from_edges(*erdos_renyi_edges(n, p, np.random.default_rng(seed)), n)
        graph = nx.fast_gnp_random_graph(n, p, seed=seed)
    elif kind == "barabasi-albert":
        graph = nx.barabasi_albert_graph(n, cfg["m"], seed=seed)
    elif kind == "watts-strogatz":
        graph = nx.watts_strogatz_graph(n, cfg["k"], cfg["p"], seed=seed)
    else:  # sbm
        labels, codes = np.unique(cfg["groups"], return_inverse=True)
        order = np.argsort(codes, kind="stable")  # positions, block by block
        sizes = np.bincount(codes, minlength=labels.size).tolist()
        probs = np.full((labels.size, labels.size), cfg["p_out"])
        np.fill_diagonal(probs, cfg["p_in"])
        graph = nx.stochastic_block_model(sizes, probs.tolist(), nodelist=order.tolist(),
                                          seed=seed, sparse=True)
    return _from_networkx(graph, n)
