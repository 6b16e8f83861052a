"""The firm as a Flower ServerApp: rounds of relay, intake and training.

Each round has two parts that never mix:

* **Relay** (:mod:`server.relay`): the coalition's own messages, copied
  between the nodes unread; the users end up with the coordinator's signal.
* **Firm**: ``train.report`` collects every node's reports,
  :mod:`server.reports` validates them, and the firm trains on them through
  :mod:`server.training` -- the same code as the vectorised engine, so the
  metrics agree bit for bit -- and is evaluated on its test set.

Nodes that error or time out are skipped and counted, malformed replies (of
any record type) are rejected and counted by reason (:mod:`server.reports`),
and the round completes: when no report is accepted the firm does not train,
and the round's ``metrics`` are ``None`` with the reason in ``training``.
A node's users are fixed by its first accepted report (:class:`Registry`).
Results go to ``<run-dir>/results.json`` and ``<run-dir>/labels.npz``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from joblib import Parallel, delayed

from agents.protocol import JOIN, REPORT, CellGrid

from .firm import make_estimator
from .relay import coalition_signal, sign_up
from .reports import Registry, Schema, assemble, validate_replies
from .training import TestSet, firm_design, train_cells
from .waves import Wire, copy_content, skip_empty_inbox_scans, wait_for_nodes

__all__ = ["RUN_CONFIG", "FirmSpec", "RunSettings", "app", "firm_metrics", "load_firm_spec", "run_rounds",
           "write_firm_spec"]

app = ServerApp()

# The app's run config and its defaults: the one copy (pyproject.toml's
# [tool.flwr.app.config] and the simulation's generated app repeat it; a test
# keeps them equal).
RUN_CONFIG = {
    "run-dir": "",  # folder with firm.npz + scenario.json
    "node-data-dir": "",  # simulation: node files are <node-data-dir>/node-<partition-id>.npz
    "rounds": 1,
    "expected-nodes": 0,  # 0: take whatever is connected after node-wait
    "node-wait": 120.0,
    "round-timeout": 600.0,  # seconds per message wave
    "node-timeout": 60.0,  # seconds a node has to answer one message (0: the wave's timeout)
    "max-in-flight": 0,  # messages in flight per wave (0: all)
}


@dataclass(frozen=True)
class RunSettings:
    run_dir: Path
    rounds: int = RUN_CONFIG["rounds"]
    expected_nodes: int = RUN_CONFIG["expected-nodes"]
    node_wait: float = RUN_CONFIG["node-wait"]
    timeout: float = RUN_CONFIG["round-timeout"]
    node_timeout: float = RUN_CONFIG["node-timeout"]
    window: int = RUN_CONFIG["max-in-flight"]

    @classmethod
    def from_run_config(cls, cfg) -> "RunSettings":
        cfg = {**RUN_CONFIG, **dict(cfg)}
        if not str(cfg["run-dir"]):
            raise ValueError("run config 'run-dir' is empty: it must name the folder with firm.npz and scenario.json")
        return cls(run_dir=Path(str(cfg["run-dir"])), rounds=int(cfg["rounds"]), expected_nodes=int(cfg["expected-nodes"]),
                   node_wait=float(cfg["node-wait"]), timeout=float(cfg["round-timeout"]),
                   node_timeout=float(cfg["node-timeout"]),
                   window=int(cfg["max-in-flight"]))


@dataclass(frozen=True)
class FirmSpec:
    """The firm's own data: its customer list, its test set and how it trains."""

    customer_ids: np.ndarray
    X_test: np.ndarray
    a_test: np.ndarray
    y_test: np.ndarray
    firm_seed: int
    scenario: dict
    X_test_cf: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return self.X_test.shape[1]

    @property
    def schema(self) -> Schema:
        """The features the firm accepts, from its own test set (:class:`server.reports.Schema`)."""
        return Schema.from_test_set(self.X_test)


def write_firm_spec(run_dir, *, customer_ids, X_test, a_test, y_test, firm_seed, scenario: dict, X_test_cf=None):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays = dict(customer_ids=np.asarray(customer_ids, dtype=np.int64), X_test=X_test, a_test=a_test, y_test=y_test,
                  firm_seed=np.array(int(firm_seed), dtype=np.int64))
    if X_test_cf is not None:
        arrays["X_test_cf"] = X_test_cf
    with open(run_dir / "firm.npz", "wb") as fh:
        np.savez(fh, **arrays)
    (run_dir / "scenario.json").write_text(json.dumps(scenario), encoding="utf-8")


def load_firm_spec(run_dir) -> FirmSpec:
    run_dir = Path(run_dir)
    with np.load(run_dir / "firm.npz", allow_pickle=False) as f:
        return FirmSpec(
            customer_ids=f["customer_ids"], X_test=f["X_test"], a_test=f["a_test"], y_test=f["y_test"],
            firm_seed=int(f["firm_seed"]), scenario=json.loads((run_dir / "scenario.json").read_text(encoding="utf-8")),
            X_test_cf=f["X_test_cf"] if "X_test_cf" in f.files else None,
        )


# ------------------------------------------------------------------ the firm


class _FirmWorkers:
    """The firm's own worker processes for its grid of fits (results in task order)."""

    def __init__(self, n_jobs: int):
        self.n_jobs = n_jobs

    def map(self, fn, tasks):
        return Parallel(n_jobs=self.n_jobs, return_as="generator")(delayed(fn)(*task) for task in tasks)


def firm_metrics(table: dict, spec: FirmSpec, *, n_jobs: int = 1) -> list[dict]:
    """Train the firm on every label row of the reports and evaluate each on the test set.

    Row 0 holds the labels when nobody relabels; the others are trained on
    exactly the labels reported (a 1 -> 0 change is trained as 0), along
    warm-start chains exactly as the vectorised engine does (same design
    matrix, same chains in the same order), so the metrics match the engine's
    bit for bit. The firm reads only the reports.
    """
    sc = spec.scenario
    labels = table["labels"]
    test = TestSet(spec.X_test, spec.y_test, spec.a_test, spec.X_test_cf)
    estimator = make_estimator(sc["firm"]["model"], sc["firm"]["params"], random_state=spec.firm_seed)
    # Row r > 0 is cell r - 1's reported labels; chains as the engine's: one per (method, alpha).
    cells = [((cell.method, cell.alpha), labels[cell.index + 1]) for cell in _cells(spec)]
    base, per_cell = train_cells(estimator, firm_design(estimator, table["X"]), labels[0], cells, test,
                                 warm=bool(sc["engine"]["warm_start"]), as_labels=True,
                                 executor=_FirmWorkers(n_jobs) if n_jobs != 1 else None)
    return [base, *per_cell]


def _cells(spec: FirmSpec) -> CellGrid:
    c = spec.scenario["collective"]
    return CellGrid.of(c["methods"], c["alphas"], c["budgets"])


# ------------------------------------------------------------------ rounds


def run_rounds(grid: Grid, settings: RunSettings) -> dict:
    """Run every round and write the results; returns the results dict."""
    spec = load_firm_spec(settings.run_dir)
    sc = spec.scenario
    cells = _cells(spec)
    n_jobs = int(sc["engine"].get("n_jobs", 1))
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    t_start = time.perf_counter()
    if n_jobs != 1:  # start the firm's worker processes while the coalition talks
        threading.Thread(target=_prewarm, args=(n_jobs,), daemon=True).start()
    nodes = wait_for_nodes(grid, settings.expected_nodes, settings.node_wait)
    results = {"expected_nodes": settings.expected_nodes, "connected_nodes": len(nodes),
               "node_wait_seconds": time.perf_counter() - t_start, "rounds": []}
    table, coalition, registry, schema = None, None, Registry(), spec.schema
    for round_ in range(1, settings.rounds + 1):
        t0 = time.perf_counter()
        wire = Wire(grid, round_, settings.timeout, settings.window, keep=(JOIN,), node_timeout=settings.node_timeout)
        log = wire.log
        if coalition is None:
            coalition = sign_up(wire, nodes)
            registry.declared.update(_declared_users(wire.kept.get(JOIN, {})))
        signal, summary = coalition_signal(wire, coalition, cells)
        users = coalition.users
        t1 = time.perf_counter()
        got = wire.wave({n: copy_content(signal) for n in users}, REPORT)
        intake = validate_replies([(n, r.content) for n, r in got.items()], n_features=spec.n_features,
                                  n_label_rows=len(cells) + 1, known_ids=spec.customer_ids, schema=schema,
                                  registry=registry)
        t2 = time.perf_counter()
        round_table = assemble(intake.accepted, order=spec.customer_ids)
        if round_table is None:
            metrics, training = None, f"skipped: no report was accepted ({len(got)} replies, {intake.n_rejected} rejected)"
            up = down = np.zeros(len(cells), dtype=np.int64)
            n_train = n_minority = 0
        else:
            table = round_table
            metrics, training = firm_metrics(table, spec, n_jobs=n_jobs), "trained"
            base, rows = table["labels"][0], table["labels"][1:]
            up, down = ((rows == 1) & (base == 0)).sum(axis=1), ((rows == 0) & (base == 1)).sum(axis=1)
            n_train, n_minority = int(table["user_ids"].size), int((table["a"] == 1).sum())
        t3 = time.perf_counter()
        results["rounds"].append({
            "round": round_,
            "n_train": n_train,
            "n_minority": n_minority,
            "training": training,
            "nodes": {"users": len(users), "reports_accepted": len(intake.accepted),
                      "reports_rejected": dict(intake.rejected), "rejected_nodes": {str(k): v for k, v in intake.rejected_nodes.items()}},
            "messages": {k: dict(v) for k, v in log.counts.items()},
            "errors": log.error_reasons[:20],
            "coalition": summary,
            "flips": (up + down).tolist(),  # reported labels that differ from row 0, per cell
            "flips_0_to_1": up.tolist(),
            "flips_1_to_0": down.tolist(),
            "metrics": metrics,
            "seconds": {"coalition": t1 - t0, "collection": t2 - t1, "training": t3 - t2, "round": t3 - t0},
            "wave_seconds": log.seconds,
        })
        _write_json(settings.run_dir / "results.json", results)
    if table is not None:
        with open(settings.run_dir / "labels.npz", "wb") as fh:
            np.savez(fh, user_ids=table["user_ids"], labels=table["labels"])
    results["seconds"] = time.perf_counter() - t_start
    _write_json(settings.run_dir / "results.json", results)
    return results


def _declared_users(joined: dict) -> dict:
    """``n_users`` each node declared in its join reply (malformed declarations are ignored)."""
    out = {}
    for node_id, reply in joined.items():
        try:
            n = reply.content["node"]["n_users"]
        except Exception:
            continue
        if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0:
            out[node_id] = int(n)
    return out


def _prewarm(n_jobs: int) -> None:
    try:
        Parallel(n_jobs=n_jobs)(delayed(abs)(i) for i in range(n_jobs))
    except Exception:  # only an optimisation
        pass


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, default=_json_default)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@app.main()
def main(grid: Grid, context: Context) -> None:
    skip_empty_inbox_scans(grid)
    run_rounds(grid, RunSettings.from_run_config(context.run_config))
