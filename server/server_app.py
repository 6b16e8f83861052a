"""The ServerApp: rounds of relay and intake, then the firm -- or the evaluator.

Each round has two parts that never mix:

* **Relay** (:mod:`server.relay`): the coalition's own messages, copied
  between the nodes unread; the users end up with the coordinator's signal.
* **Collection**, by one of two roles, chosen once per run by the run config's
  ``mode`` and never mixed:

  - ``mode = "deploy"`` (the default; real devices; ``collective-fairness-deploy``):
    the **firm**. ``train.report`` collects one reported label per user (the label
    the collective's single deployed cell gives), :mod:`server.reports`
    validates the reports, and the firm trains on exactly those labels (both
    directions: a reported 0 is trained as 0) and is evaluated on its test set.
    It never sees a true label of a flipped user, so it cannot and does not
    count flips; ``results.json`` records what it received, its metrics and the
    rejections. The run fails at start (one line) if the scenario's grid has
    more than one cell.
  - ``mode = "evaluate"`` (the simulation backend sets it): the
    experimenter's **evaluator** (:mod:`server.evaluator`), not a firm.
    ``evaluate.cells`` collects every user's counterfactual rows (true labels and
    one reported row per cell), validated by the same intake, and every cell is
    trained with the engine's own :mod:`server.training`, so metrics and flips
    equal the vectorised engine's bit for bit. ``train.report`` is not sent.
    Only nodes whose owners consent answer it (``agents.client_app.answers_evaluator``:
    simulated nodes, or node config ``evaluator=true``), so whoever runs the
    ServerApp cannot read a device's true labels by switching modes.

Nodes that error or time out are skipped and counted, malformed replies (of
any record type) are rejected and counted by reason (:mod:`server.reports`),
and the round completes: when no report is accepted nothing is trained, and
the round's ``metrics`` are ``None`` with the reason in ``training``. Which
node reports for which users is fixed at sign-up from the ids each node
declares in its join reply (:meth:`server.reports.Registry.declare`).
Results go to ``<run-dir>/results.json`` and ``<run-dir>/labels.npz``, both
readable by their owner only (mode 0600).
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

from agents.errors import ConfigError
from agents.protocol import JOIN, REPORT, CellGrid

from .evaluator import Evaluator
from .firm import make_estimator
from .relay import addressed, coalition_signal, sign_up
from .reports import Intake, Registry, Schema, assemble, validate_replies
from .training import TestSet, firm_design, train_cells
from .waves import Wire, skip_empty_inbox_scans, wait_for_nodes

__all__ = ["MODES", "RUN_CONFIG", "FirmSpec", "ReportedFirm", "RunSettings", "app", "load_firm_spec", "run_rounds",
           "write_firm_spec"]

app = ServerApp()

# The app's run config and its defaults: the one copy (pyproject.toml's
# [tool.flwr.app.config] and the simulation's generated app repeat it; a test
# keeps them equal).
RUN_CONFIG = {
    "mode": "deploy",  # "deploy": the firm only (the safe default); "evaluate": the experimenter's evaluator (simulation)
    "run-dir": "",  # folder with firm.npz + scenario.json
    "node-data-dir": "",  # simulation: node files are <node-data-dir>/node-<partition-id>.npz
    "rounds": 1,
    "expected-nodes": 0,  # 0: take whatever is connected after node-wait
    "node-wait": 120.0,
    "round-timeout": 600.0,  # seconds per message wave
    "node-timeout": 60.0,  # seconds a node has to answer one message (0: the wave's timeout)
    "max-in-flight": 0,  # messages in flight per wave (0: all)
}
MODE_EVALUATE, MODE_DEPLOY = "evaluate", "deploy"
MODES = (MODE_EVALUATE, MODE_DEPLOY)


@dataclass(frozen=True)
class RunSettings:
    run_dir: Path
    rounds: int = RUN_CONFIG["rounds"]
    expected_nodes: int = RUN_CONFIG["expected-nodes"]
    node_wait: float = RUN_CONFIG["node-wait"]
    timeout: float = RUN_CONFIG["round-timeout"]
    node_timeout: float = RUN_CONFIG["node-timeout"]
    window: int = RUN_CONFIG["max-in-flight"]
    mode: str = RUN_CONFIG["mode"]

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"run config mode = {self.mode!r} is not a mode; allowed: {', '.join(MODES)} "
                              "(deploy: the firm only; evaluate: the experimenter's evaluator, simulation only)")

    @classmethod
    def from_run_config(cls, cfg) -> "RunSettings":
        cfg = {**RUN_CONFIG, **dict(cfg)}
        if not str(cfg["run-dir"]):
            raise ConfigError("run config 'run-dir' is empty: it must name the folder with firm.npz and scenario.json")
        return cls(run_dir=Path(str(cfg["run-dir"])), rounds=int(cfg["rounds"]), expected_nodes=int(cfg["expected-nodes"]),
                   node_wait=float(cfg["node-wait"]), timeout=float(cfg["round-timeout"]),
                   node_timeout=float(cfg["node-timeout"]),
                   window=int(cfg["max-in-flight"]), mode=str(cfg["mode"]))


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
    # How the firm encodes raw records (agents.encoding.Encoding.to_config), published to every
    # node at sign-up so devices holding raw records report the firm's features.
    encoding: dict | None = None

    @property
    def n_features(self) -> int:
        return self.X_test.shape[1]

    @property
    def schema(self) -> Schema:
        """The features the firm accepts, from its own test set (:class:`server.reports.Schema`)."""
        return Schema.from_test_set(self.X_test)


def write_firm_spec(run_dir, *, customer_ids, X_test, a_test, y_test, firm_seed, scenario: dict, X_test_cf=None,
                    encoding: dict | None = None):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays = dict(customer_ids=np.asarray(customer_ids, dtype=np.int64), X_test=X_test, a_test=a_test, y_test=y_test,
                  firm_seed=np.array(int(firm_seed), dtype=np.int64))
    if X_test_cf is not None:
        arrays["X_test_cf"] = X_test_cf
    if encoding is not None:  # JSON: floats round-trip exactly
        arrays["encoding"] = np.array(json.dumps(encoding, allow_nan=False))
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
            encoding=json.loads(str(f["encoding"])) if "encoding" in f.files else None,
        )


# ------------------------------------------------------------------ the firm


@dataclass
class ReportedFirm:
    """The firm of a deployment: it trains on exactly the labels reported to it.

    It receives only validated reports (one label per user), trains its model
    on them as they are -- from scratch, with the engine's own code
    (:func:`server.training.train_cells`), so its metrics equal the engine's
    row of the deployed cell when the engine does not warm-start -- and is
    evaluated on its own test set. It never sees a true label of a flipped
    user, so flips are unknown to it.
    """

    estimator: object
    test: TestSet
    order: np.ndarray  # its customer list: rows of the table follow it
    table: dict | None = None  # the last accepted reports (user ids, X, a, one label row)

    message_type = REPORT
    n_label_rows = 1
    name = "firm"

    def assess(self, intake: Intake, n_replies: int) -> dict:
        """Train on the accepted reports; the round's record (what it received, its metrics)."""
        table = assemble(intake.accepted, order=self.order)
        if table is None:
            return {"n_train": 0, "n_minority": 0, "received": _received(None),
                    "training": f"skipped: no report was accepted ({n_replies} replies, {intake.n_rejected} rejected)",
                    "metrics": None}
        self.table = table
        reported = table["labels"][0]
        metrics, _ = train_cells(self.estimator, firm_design(self.estimator, table["X"]), reported, [], self.test)
        return {"n_train": int(table["user_ids"].size), "n_minority": int((table["a"] == 1).sum()),
                "received": _received(table), "training": "trained", "metrics": metrics}


def _received(table: dict | None) -> dict:
    """What the firm received: users and positive labels, overall and per group of ``a``."""
    if table is None:
        return {"users": 0, "positive": 0, "by_group": {}}
    y, a = table["labels"][0], table["a"]
    return {"users": int(y.size), "positive": int(y.sum()),
            "by_group": {str(int(g)): {"users": int((a == g).sum()), "positive": int(y[a == g].sum())}
                         for g in np.unique(a)}}


def _cells(spec: FirmSpec) -> CellGrid:
    c = spec.scenario["collective"]
    return CellGrid.of(c["methods"], c["alphas"], c["budgets"])


def _role(mode: str, spec: FirmSpec, cells: CellGrid, n_jobs: int):
    """The run's one collection role: the firm (deploy) or the evaluator (evaluate)."""
    sc = spec.scenario
    estimator = make_estimator(sc["firm"]["model"], sc["firm"]["params"], random_state=spec.firm_seed)
    test = TestSet(spec.X_test, spec.y_test, spec.a_test, spec.X_test_cf)
    if mode == MODE_DEPLOY:
        if len(cells) != 1:
            raise ConfigError(
                f"run config mode = 'deploy' runs the one cell the collective deploys, but the scenario's grid has "
                f"{len(cells)} cells ({len(cells.methods)} methods x {len(cells.alphas)} alphas x "
                f"{len(cells.budgets)} budgets); allowed: one method, one alpha and one budget "
                "(collective-fairness-deploy --cell METHOD:ALPHA:BUDGET), or mode = 'evaluate' (the experimenter's view)")
        return ReportedFirm(estimator, test, spec.customer_ids)
    dynamics = sc.get("dynamics") or {}
    window = 1  # rounds of reports each cell trains on: this round's, or (accumulate) the last window's
    if dynamics.get("reports", "replace") == "accumulate":
        window = None if dynamics.get("window", "all") == "all" else int(dynamics["window"])
    # Benefit-cost: the firm publishes each round's models as ``public`` allows (members read their gain).
    public = tuple(dynamics.get("public", ("own-outcome", "group-rates"))) \
        if dynamics.get("participation") == "benefit-cost" else ()
    return Evaluator(cells, estimator, test, spec.customer_ids, warm=bool(sc["engine"]["warm_start"]), n_jobs=n_jobs,
                     window=window, public=public)


# ------------------------------------------------------------------ rounds


def run_rounds(grid: Grid, settings: RunSettings) -> dict:
    """Run every round and write the results; returns the results dict."""
    spec = load_firm_spec(settings.run_dir)
    cells = _cells(spec)
    n_jobs = int(spec.scenario["engine"].get("n_jobs", 1))
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    role = _role(settings.mode, spec, cells, n_jobs)  # a deployment of several cells fails here, before anything
    t_start = time.perf_counter()
    if settings.mode == MODE_EVALUATE and n_jobs != 1:  # start the evaluator's workers while the coalition talks
        threading.Thread(target=_prewarm, args=(n_jobs,), daemon=True).start()
    nodes = wait_for_nodes(grid, settings.expected_nodes, settings.node_wait)
    results = {"mode": settings.mode, "role": role.name,
               "expected_nodes": settings.expected_nodes, "connected_nodes": len(nodes),
               "node_wait_seconds": time.perf_counter() - t_start, "rounds": []}
    coalition, registry, schema = None, Registry(), spec.schema
    for round_ in range(1, settings.rounds + 1):
        t0 = time.perf_counter()
        wire = Wire(grid, round_, settings.timeout, settings.window, keep=(JOIN,), node_timeout=settings.node_timeout)
        log = wire.log
        if coalition is None:
            coalition = sign_up(wire, nodes, encoding=spec.encoding)
            results["sign_up"] = _declare(registry, wire.kept.get(JOIN, {}))
        signal, summary = coalition_signal(wire, coalition, cells, every_round=bool(spec.scenario.get("dynamics")),
                                           published=getattr(role, "published", None))
        users = coalition.users
        t1 = time.perf_counter()
        got = wire.wave({n: addressed(signal, n) for n in users}, role.message_type)
        intake = validate_replies([(n, r.content) for n, r in got.items()], n_features=spec.n_features,
                                  n_label_rows=role.n_label_rows, known_ids=spec.customer_ids, schema=schema,
                                  registry=registry)
        t2 = time.perf_counter()
        assessed = role.assess(intake, len(got))
        t3 = time.perf_counter()
        head = {k: assessed.pop(k) for k in ("n_train", "n_minority", "training")}
        results["rounds"].append({
            "round": round_,
            **head,
            "nodes": intake.summary(len(users)),
            "messages": {k: dict(v) for k, v in log.counts.items()},
            "errors": log.error_reasons[:20],
            "coalition": summary,  # the coordinator's public summary (the relay's log, not the firm's)
            **assessed,  # evaluator: flips and metrics per cell; firm: what it received, its metrics
            "seconds": {"coalition": t1 - t0, "collection": t2 - t1, "training": t3 - t2, "round": t3 - t0},
            "wave_seconds": log.seconds,
        })
        _write_json(settings.run_dir / "results.json", results)
    if role.table is not None:  # labels per user are private: 0600
        table = role.table
        _write_private(settings.run_dir / "labels.npz",
                       lambda fh: np.savez(fh, user_ids=table["user_ids"], labels=table["labels"]))
    results["seconds"] = time.perf_counter() - t_start
    _write_json(settings.run_dir / "results.json", results)
    return results


def _declare(registry: Registry, joined: dict) -> dict:
    """Sign-up: what each node declared in its join reply's ``node`` record -- ``n_users``
    (the size bound of its reports) and ``user_ids`` (the users it reports for, owned for
    the run). Malformed declarations are ignored (such a node owns the ids of its first
    accepted report). Returns the counts ``results.json`` records."""
    ids_by_node = {}
    for node_id, reply in joined.items():
        try:
            node = reply.content["node"]
        except Exception:
            continue
        n = node.get("n_users") if hasattr(node, "get") else None
        if _is_int(n) and n >= 0:
            registry.declared[node_id] = int(n)
        ids = node.get("user_ids") if hasattr(node, "get") else None
        if isinstance(ids, list) and all(_is_int(u) for u in ids):
            ids_by_node[node_id] = ids
    contested = registry.declare(ids_by_node)
    return {"nodes_declaring_ids": len(ids_by_node), "contested_ids": contested}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _prewarm(n_jobs: int) -> None:
    try:
        Parallel(n_jobs=n_jobs)(delayed(abs)(i) for i in range(n_jobs))
    except Exception:  # only an optimisation
        pass


def _write_json(path: Path, obj) -> None:
    _write_private(path, lambda fh: fh.write(json.dumps(obj, default=_json_default).encode("utf-8")))


def _write_private(path: Path, write) -> None:
    """Write a file readable by its owner only (0600), atomically: a 0600 temporary file
    in the same folder, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@app.main()
def main(grid: Grid, context: Context) -> None:
    skip_empty_inbox_scans(grid)
    run_rounds(grid, RunSettings.from_run_config(context.run_config))
