"""One seed's files for a federation, and its results as the engine's rows.

For each seed the backend builds the same world as the vectorised engine and
writes one file per node (K = ``agents-per-node`` users each, in the engine's
user order) plus the coordinator's file and the firm's file. The ServerApp
writes ``results.json``; :func:`results_frame` turns it into the engine's tidy
rows (``backend = "flower"``), so both backends give the same table.

Node files hold users' records, the coordinator's secret token and the
collective's keys; the firm's file holds its test set. All are written
readable by their owner only (files 0600, the ``nodes/`` folder 0700), and
:func:`remove_node_files` / :func:`node_files_removed` delete ``nodes/`` after
a run unless it is kept.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agents.errors import ConfigError, DataError
from agents.node import new_coordinator_token, token_digest, write_coordinator_file, write_users_file
from agents.node import write_invitation
from agents.protocol import EVALUATE, REPORT, CellGrid
from agents.rounds import MembersGraph, RoundSettings
from agents.sealing import new_key_pair, new_secret
from server.server_app import write_firm_spec

from ..engine import load_data
from ..rows import BASE, cell_columns, config_columns, method_columns
from ..state import build_world
from .devices import encoding_of, raw_records, write_raw_records

__all__ = ["DEVICE_FILES", "RoundWatch", "RunFiles", "node_files_removed", "prepare_run", "remove_node_files",
           "results_frame", "round_line", "round_settings", "rounds_frame"]

# How users' node files are written: "npz" (prepared centrally, encoded: the simulation's fast
# path) or "raw" (what a device holds: its raw records as CSV plus the collective's invitation;
# the node encodes them with the encoding the firm publishes at sign-up).
DEVICE_FILES = ("npz", "raw")


@dataclass(frozen=True)
class RunFiles:
    """One seed's files: node files (users shards, then the coordinator) and the firm's."""

    run_dir: Path
    node_files: tuple[Path, ...]
    invitation: Path | None = None  # the collective's invitation, with raw device files

    @property
    def n_nodes(self) -> int:
        return len(self.node_files)

    def node_config(self, i: int, *, evaluator: bool = False) -> dict:
        """Node ``i``'s node config on a deployment: its file, the invitation for raw records and,
        with ``evaluator``, the owner's consent to answer the experimenter's evaluator."""
        config = {"data-path": str(Path(self.node_files[i]).resolve())}
        if self.invitation is not None and Path(self.node_files[i]).suffix != ".npz":
            config["collective"] = str(Path(self.invitation).resolve())
        if evaluator:
            config["evaluator"] = True
        return {**config, "partition-id": i, "num-partitions": self.n_nodes}

    @property
    def node_data_dir(self) -> Path:
        return self.run_dir / "nodes"


def prepare_run(scenario, seed: int, run_dir, *, dataset=None, agents_per_node: int | None = None,
                _sealed: bool = True, device_files: str = "npz") -> RunFiles:
    """Write every node's file, the coordinator's and the firm's for one seed.

    Users are sharded in the engine's order, K per node; which node holds whom
    changes nothing (scores and tickets are per user). The node files hold a fresh
    sealing key pair (the coordinator's private key, its public key in users'
    files) and collective secret (:mod:`agents.sealing`). ``_sealed=False`` leaves
    them out, so the coalition's payloads travel unsealed: for
    ``benchmarks/flower_scaling.py`` to measure what sealing costs, nothing else.

    ``device_files`` (:data:`DEVICE_FILES`): ``"npz"`` writes each shard's encoded
    records, ``"raw"`` its raw records as a CSV (``node-<i>.csv``,
    :mod:`simulations.flower.devices`) plus the collective's invitation
    ``collective.json``, as devices hold them. The firm's file always carries its
    published feature encoding.
    """
    if device_files not in DEVICE_FILES:
        raise ConfigError(f"device files {device_files!r}; allowed: {', '.join(DEVICE_FILES)}")
    if scenario.dynamics is not None and device_files != "npz":
        raise ConfigError(f"device files {device_files!r} with [dynamics]: the invitation carries no dynamics "
                          "settings; allowed: 'npz'")
    run_dir = Path(run_dir)
    k = int(agents_per_node or scenario.flower.agents_per_node)
    dataset = dataset if dataset is not None else load_data(scenario, seed=seed)
    world = build_world(scenario, dataset, seed)
    _private_dir(run_dir, chmod=False)  # a folder we create is 0700; one given to us is left as it is
    _private_dir(run_dir / "nodes", chmod=True)
    try:
        return _write_run(scenario, run_dir, world, k, sealed=_sealed, raw=device_files == "raw")
    except BaseException:  # no half-written set of users' records is left behind
        remove_node_files(RunFiles(run_dir, ()))
        raise


def _write_run(scenario, run_dir: Path, world, k: int, *, sealed: bool = True, raw: bool = False) -> RunFiles:
    p = world.prepared
    keys = dict(membership_key=world.membership_key, tie_key=world.tie_key)
    dynamics = {} if scenario.dynamics is None else {"dynamics": round_settings(scenario, world.seed)}
    token = new_coordinator_token()  # the coordinator's identity; users hold its digest
    # Sealing keys from the OS's randomness, not the seed: results do not depend on them.
    private, public = new_key_pair() if sealed else (b"", b"")
    collective = new_secret() if sealed else b""
    n = world.user_ids.size
    files = []
    for i, start in enumerate(range(0, n, k)):
        rows = slice(start, min(start + k, n))
        if raw:  # what a device holds: its own raw records, nothing encoded
            records = raw_records(p, np.arange(rows.start, rows.stop), world.user_ids[rows])
            files.append(write_raw_records(run_dir / "nodes" / f"node-{i}.csv", records))
            continue
        files.append(write_users_file(
            run_dir / "nodes" / f"node-{i}.npz", user_ids=world.user_ids[rows], X=p.X_train[rows],
            a=p.a_train[rows], y=p.y_train[rows], **keys, coordinator_digest=token_digest(token),
            coordinator_key=public, collective_key=collective,
            cf_proba=None if p.cf_proba_train is None else p.cf_proba_train[rows], **dynamics,
        ))
    c = scenario.collective
    graph = members_graph(scenario, world) if dynamics and dynamics["dynamics"].uses_graph else None
    files.append(write_coordinator_file(
        run_dir / "nodes" / f"node-{len(files)}.npz", grid=CellGrid.of(c.methods, c.alphas, c.budgets), params=c.scorer_params(),
        X_ref=p.X_train[world.reference], y_ref=p.y_train[world.reference], **keys, token=token,
        private_key=private, collective_key=collective, graph=graph, **dynamics,
    ))
    firm = run_dir / "firm.npz"  # the firm's test set: created 0600 before write_firm_spec fills it
    fd = os.open(firm, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    write_firm_spec(
        run_dir, customer_ids=world.user_ids, X_test=p.X_test, a_test=p.a_test, y_test=p.y_test,
        firm_seed=world.firm_seed, scenario=scenario.to_dict(), X_test_cf=p.X_test_cf,
        encoding=encoding_of(p).to_config(),
    )
    invitation = None
    if raw:  # what the collective hands each member
        invitation = write_invitation(run_dir / "nodes" / "collective.json", **keys,
                                      coordinator_digest=token_digest(token), coordinator_key=public,
                                      collective_key=collective)
    return RunFiles(run_dir, tuple(files), invitation)


def round_settings(scenario, seed: int) -> RoundSettings:
    """What the node files carry for many rounds: the ``[dynamics]`` settings the user half
    and the coordinator read, and the seed's ticket keys (:func:`simulations.dynamics.draw_keys`)."""
    from ..dynamics import draw_keys

    d, keys = scenario.dynamics, draw_keys(seed)
    return RoundSettings(participation=d.participation, threshold_mean=float(d.threshold_mean),
                         threshold_sd=float(d.threshold_sd), leave=bool(d.leave), organisers=d.organisers,
                         compliance=float(d.compliance), dropout=float(d.dropout), score_noise=float(d.score_noise),
                         threshold_key=keys.threshold, organisers_key=keys.organisers, dropout_key=keys.dropout,
                         compliance_key=keys.compliance, noise_key=keys.noise, seen=d.seen,
                         organisers_by=d.organisers_by, coordination=d.coordination[0],
                         gossip_steps=int(d.gossip_steps), gossip_bins=int(d.gossip_bins), hops=int(d.hops),
                         staleness=int(d.staleness), cost_mean=float(d.cost_mean), cost_sd=float(d.cost_sd),
                         cost_key=keys.cost, free_ride=bool(d.free_ride), memory=int(d.memory),
                         public=tuple(d.public))


def members_graph(scenario, world) -> MembersGraph | None:
    """The members' graph of a ``[dynamics]`` scenario, drawn from the seed's graph stream
    exactly as :class:`simulations.dynamics.CollectiveDynamics` draws it (the same code:
    its setup), over the minority's user ids in the model's order."""
    from ..dynamics import setup

    model = setup(scenario, world)
    if model.graph is None:  # "complete": everyone sees everyone, degrees are equal
        return None
    adjacency = model.graph.tocsr()
    adjacency.eliminate_zeros()
    adjacency.sort_indices()
    return MembersGraph(np.asarray(world.user_ids[model.minority], dtype=np.int64),
                        adjacency.indptr.astype(np.int64), adjacency.indices.astype(np.int64))


def _private_dir(path: Path, *, chmod: bool) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        chmod = True  # the mode given to mkdir is masked by the umask
    if chmod:
        os.chmod(path, 0o700)


def remove_node_files(files: RunFiles) -> None:
    """Delete a run's node files (its ``nodes/`` folder); the firm's files and results stay."""
    shutil.rmtree(files.node_data_dir, ignore_errors=True)
    for path in files.node_files:  # files written elsewhere than nodes/ (none today)
        Path(path).unlink(missing_ok=True)


@contextmanager
def node_files_removed(files: RunFiles, *, keep: bool = False):
    """``with node_files_removed(files): run(files)``: the node files are gone afterwards,
    also when the run fails, unless ``keep``."""
    try:
        yield files
    finally:
        if not keep:
            remove_node_files(files)


def results_frame(scenario, dataset, seed: int, results: dict, *, round_: int = -1) -> pd.DataFrame:
    """The engine's tidy rows from one round of a Flower run's results.

    From the evaluator's results (``mode = "evaluate"``): the base row and one row
    per cell, as the vectorised engine's. From a deployment's (``mode = "deploy"``,
    the firm only): one row, the deployed cell, with the firm's metrics; its
    ``flips`` are NaN, since the firm never sees who flipped, and there is no base
    row (the firm never trains on the true labels).
    """
    r = results["rounds"][round_]
    config = config_columns(scenario, dataset, backend="flower")
    coalition = r["coalition"]
    metrics = r["metrics"]
    if metrics is None:  # no report was accepted that round: nothing was trained
        rejected = ", ".join(f"{n} {why}" for why, n in r["nodes"]["reports_rejected"].items()) or "none"
        raise DataError(f"seed {seed}: round {r['round']} of the federation accepted no report (rejected: {rejected}; "
                        f"{r.get('training', 'not trained')}); allowed: a round where at least one node's report "
                        f"passes the firm's checks (see {results.get('run_dir', 'results.json')})")
    extra = {"round": r["round"], "reports_rejected": sum(r["nodes"]["reports_rejected"].values()),
             "nodes_failed": sum(v.get("errors", 0) + v.get("timeouts", 0) for v in r["messages"].values())}
    common = {**config, "seed": seed, "n_train": r["n_train"], "n_minority": r["n_minority"]}
    c = scenario.collective
    grid = CellGrid.of(c.methods, c.alphas, c.budgets)

    def cell_row(cell, flips, cell_metrics):
        get = lambda key, default=np.nan: coalition[key][cell.index] if key in coalition else default  # noqa: E731
        columns = cell_columns(cell.method, cell.alpha, cell.budget,
                               n_members=coalition["n_members"][cell.alpha_index] if coalition else 0,
                               pool_size=get("pool_size", 0), m=get("m", 0), flips=flips, threshold=get("score"))
        return {**common, **columns, **method_columns(c.scorer_params(), cell.method), **cell_metrics, **extra}

    if results.get("mode") == "deploy":
        if len(grid) != 1:
            raise DataError(f"seed {seed}: a deployment's results hold one cell, but the scenario has {len(grid)}; "
                            "allowed: the one-cell scenario the deployment ran")
        (cell,) = grid
        return pd.DataFrame([cell_row(cell, np.nan, metrics)])  # flips: unknown to the firm
    rows = [{**common, **cell_columns(BASE, 0.0, 0.0), **metrics[0], **extra}]
    rows += [cell_row(cell, r["flips"][cell.index], metrics[cell.index + 1]) for cell in grid]
    return pd.DataFrame(rows)


def rounds_frame(scenario, dataset, seed: int, results: dict) -> pd.DataFrame:
    """The vectorised model's per-round table (``rounds.csv``) from a Flower run of a
    ``[dynamics]`` scenario: per round the base row and one row per cell, with the
    columns of :class:`simulations.dynamics.CollectiveDynamics`'s table.

    The coordinator's summary gives members, organisers, participants, dropouts, the
    pool, M, intended flips and the threshold; the evaluator the flips and metrics.
    The coordinator reaches every participant with the exact threshold, so the
    threshold errors are 0 (NaN with an empty pool). Columns Flower does not know are
    NaN: ``benefit_*`` (the models' probabilities for each member: the evaluator does
    not compute them) and ``retrain_seconds`` (it does not time each cell's fit).
    """
    from ..dynamics import DYNAMICS_COLUMNS

    config = config_columns(scenario, dataset, backend="flower")
    c = scenario.collective
    grid = CellGrid.of(c.methods, c.alphas, c.budgets)
    params = c.scorer_params()
    rows = []
    for index in range(len(results["rounds"])):
        frame = results_frame(scenario, dataset, seed, results, round_=index)  # one clear line for a failed round
        r = results["rounds"][index]
        coalition, metrics = r["coalition"], r["metrics"]
        common = {**config, "seed": seed, "n_train": r["n_train"], "n_minority": r["n_minority"]}
        head = {"coordination": scenario.dynamics.coordination[0], "round": r["round"]}
        base = {name: 0 for name in DYNAMICS_COLUMNS}
        base.update(participant_share=0.0, threshold=np.nan, threshold_error=np.nan, threshold_error_rank=np.nan,
                    benefit_participants=np.nan, benefit_free_riders=np.nan, benefit_minority=0.0,
                    retrain_seconds=np.nan)
        rows.append({**common, **head, **{k: frame.iloc[0][k] for k in ("method", "alpha", "budget", "budget_kind")},
                     **base, **metrics[0]})
        # Participation rows: one per alpha, or with benefit-cost one per cell.
        per_cell = scenario.dynamics.participation == "benefit-cost"
        for cell in grid:
            get = lambda key, i: coalition[key][i] if key in coalition else 0  # noqa: E731
            columns = cell_columns(cell.method, cell.alpha, cell.budget)
            row = cell.index if per_cell else cell.alpha_index
            participants, pool, m = get("participants", row), get("pool_size", cell.index), get("m", cell.index)
            flips = int(r["flips"][cell.index])
            error = 0.0 if pool else np.nan
            errors = (error, error)
            reached = participants
            if "reached" in coalition:  # gossip: the coordinator's simulation says who got an estimate, how good
                reached = coalition["reached"][cell.index]
                errors = tuple(float(coalition[key][cell.index]) if coalition[key][cell.index] is not None else np.nan
                               for key in ("threshold_error", "threshold_error_rank"))
            extra = {
                "eligible": get("n_members", cell.alpha_index), "organisers": get("organisers", cell.alpha_index),
                "participants": participants, "participant_share": float(participants / max(1, r["n_minority"])),
                "dropouts": get("dropouts", row), "free_riders": get("free_riders", row), "candidates": pool,
                "members_reached": reached, "m": m, "intended_flips": get("intended", cell.index),
                "flips": flips, "flips_minus_m": flips - int(m),
                "threshold": float(coalition["score"][cell.index]) if "score" in coalition else np.nan,
                "threshold_error": errors[0], "threshold_error_rank": errors[1], "benefit_participants": np.nan,
                "benefit_free_riders": np.nan, "benefit_minority": np.nan, "retrain_seconds": np.nan,
            }
            rows.append({**common, **head, **{k: columns[k] for k in ("method", "alpha", "budget", "budget_kind")},
                         **method_columns(params, cell.method), **{k: extra[k] for k in DYNAMICS_COLUMNS},
                         **metrics[cell.index + 1]})
    return pd.DataFrame(rows)


def round_line(record: dict, rounds: int) -> str:
    """One line a person can follow for a finished round of ``results.json`` (either role)."""
    messages = record.get("messages", {})
    report = messages.get(EVALUATE) or messages.get(REPORT) or {}
    rejected = record.get("nodes", {}).get("reports_rejected", {})
    failed = sum(v.get("errors", 0) + v.get("timeouts", 0) for v in messages.values())
    seconds = record.get("seconds", {})
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "round")
    why = ", ".join(f"{n} {reason}" for reason, n in rejected.items()) or "none"
    got = record.get("received")  # the firm's rounds: what it received
    received = f" (the firm received {got['users']} users, {got['positive']} positive labels)" if got else ""
    return (f"round {record.get('round', '?')}/{rounds}: {report.get('ok', 0)}/{report.get('sent', 0)} nodes "
            f"reported{received}, rejected: {why}, failed or timed out: {failed}; {seconds.get('round', 0):.1f} s "
            f"({phases})")


class RoundWatch:
    """Calls ``on_round(line)`` for every round the ServerApp has added to ``results.json``
    since the last look (cheap: reads the file only when it changed)."""

    def __init__(self, path: Path, rounds: int, on_round):
        self.path, self.rounds, self.on_round = Path(path), rounds, on_round
        self.seen, self.stamp = 0, None

    def poll(self) -> None:
        if self.on_round is None:
            return
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp == self.stamp:
                return
            import json

            records = json.loads(self.path.read_text(encoding="utf-8")).get("rounds", [])
        except (OSError, ValueError):
            return
        self.stamp = stamp
        for record in records[self.seen:]:
            self.on_round(round_line(record, self.rounds))
        self.seen = max(self.seen, len(records))
