"""The firm as a Flower ServerApp: rounds of coalition relay, collection and training.

Each round has two parts that never mix:

* **Relay** (agents-side protocol): ``query.join`` to every node, the joined
  tickets to the coordinator node (``query.coordinate``), its cutoffs and
  shared signal to the users (``query.scores``), their candidate scores back to
  the coordinator, whose thresholds go out with the collection request (later
  rounds reuse the sign-up and the scores). The relay copies these records
  between nodes without interpreting them; only the coordinator's public
  summary (members, pool, M, threshold) is logged for the experiment record.
* **Firm**: ``train.report`` collects every node's reports, :mod:`server.reports`
  validates them, the firm trains on them exactly as the vectorised engine does
  (same :class:`server.firm.Firm`, same warm-start chains) and is evaluated on
  its test set.

Nodes that error or time out are skipped and counted; the round completes.
Results go to ``<run-dir>/results.json`` and ``<run-dir>/labels.npz``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from joblib import Parallel, delayed

from agents.coalition import cell_plan
from server.firm import make_estimator
from server.reports import assemble, validate_reports

__all__ = ["FirmSpec", "RunSettings", "app", "firm_metrics", "run_rounds", "skip_empty_inbox_scans", "wait_for_nodes",
           "write_firm_spec"]

app = ServerApp()


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class RunSettings:
    run_dir: Path
    rounds: int = 1
    expected_nodes: int = 0  # 0: take whatever is connected after node_wait
    node_wait: float = 60.0
    timeout: float = 600.0  # per message wave
    window: int = 0  # messages in flight per wave (0: all at once)

    @classmethod
    def from_run_config(cls, cfg) -> "RunSettings":
        run_dir = str(cfg.get("run-dir", ""))
        if not run_dir:
            raise ValueError("run config 'run-dir' is empty: it must name the folder with firm.npz and scenario.json")
        return cls(
            run_dir=Path(run_dir),
            rounds=int(cfg.get("rounds", 1)),
            expected_nodes=int(cfg.get("expected-nodes", 0)),
            node_wait=float(cfg.get("node-wait", 60.0)),
            timeout=float(cfg.get("round-timeout", 600.0)),
            window=int(cfg.get("max-in-flight", 0)),
        )


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


# ------------------------------------------------------------------ messaging


@dataclass
class WaveLog:
    """Per message type: how many were sent, answered, errored, timed out."""

    counts: dict = field(default_factory=dict)
    error_reasons: list = field(default_factory=list)

    seconds: dict = field(default_factory=dict)

    def add(self, message_type: str, sent: int, ok: int, errors: int, seconds: float = 0.0):
        c = self.counts.setdefault(message_type, Counter())
        c.update(sent=sent, ok=ok, errors=errors, timeouts=sent - ok - errors)
        self.seconds[message_type] = self.seconds.get(message_type, 0.0) + seconds


def wait_for_nodes(grid: Grid, expected: int, wait: float, *, poll: float = 0.2) -> list[int]:
    """Node ids once ``expected`` are connected (or whatever is there after ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if (expected and len(nodes) >= expected) or time.monotonic() >= deadline:
            return nodes
        time.sleep(poll)


@dataclass
class Wire:
    """The relay's link to the nodes for one round: every wave times out and is logged."""

    grid: Grid
    round: int
    timeout: float
    window: int = 0
    log: WaveLog = field(default_factory=WaveLog)

    def wave(self, contents: dict[int, RecordDict], message_type: str) -> dict[int, Message]:
        """Send one message per node and keep the good replies, by node id."""
        if not contents:
            return {}
        t0 = time.perf_counter()
        msgs = {}
        for node_id, content in contents.items():
            content["round"] = ConfigRecord({"round": self.round})
            msgs[node_id] = Message(content, dst_node_id=node_id, message_type=message_type,
                                    group_id=str(self.round), ttl=self.timeout + 60.0)
        replies = _push_and_pull(self.grid, list(msgs.values()), self.timeout, window=self.window)
        sent_ids = {m.metadata.message_id: n for n, m in msgs.items()}
        ok, errors = {}, 0
        for reply in replies:
            node_id = sent_ids.get(reply.metadata.reply_to_message_id)
            if node_id is None:
                continue
            if reply.has_error():
                errors += 1
                self.log.error_reasons.append(f"{message_type} node {node_id}: {str(reply.error.reason)[-300:]}")
            else:
                ok[node_id] = reply
        self.log.add(message_type, len(msgs), len(ok), errors, time.perf_counter() - t0)
        return ok


def _push_and_pull(grid: Grid, messages: list[Message], timeout: float, *, window: int = 0,
                   poll: float = 0.05) -> list[Message]:
    """``send_and_receive`` with a short poll and at most ``window`` messages in flight.

    Flower's deployment grid sleeps 3 s between pulls, which would dominate a
    round of short message waves; and the simulation's in-memory store scans
    every stored message for every node on each delivery sweep, so keeping the
    store small keeps a wave over 1,000 nodes linear instead of quadratic.
    Messages not pushed before the deadline count as timeouts.
    """
    queue, pending, replies = list(messages), set(), []
    window = window if window > 0 else len(queue)
    deadline = time.monotonic() + timeout
    while queue or pending:
        if queue and len(pending) < window and time.monotonic() < deadline:
            batch, queue = queue[: window - len(pending)], queue[window - len(pending):]
            pending.update(grid.push_messages(batch))
        got = list(grid.pull_messages(pending)) if pending else []
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if time.monotonic() >= deadline:
            break
        if not got:
            time.sleep(poll)
    return replies


def skip_empty_inbox_scans(grid, *, refresh: float = 1.0) -> bool:
    """Simulation only: answer the engine's inbox poll of a node with no message cheaply.

    flwr 1.42's simulation engine asks every node for its next message every
    0.1 s (``InMemoryLinkState.get_message_ins``), and each ask validates every
    stored message: O(nodes x messages) per sweep, ~13 ms per message at 1,000
    nodes, most of a round with one user per node. This wraps the run's own
    in-memory store (same process as the ServerApp) with a set of the nodes
    that have an undelivered message: those still go through Flower's method, so
    deliveries are unchanged; any other node gets ``[]`` at once (expired
    messages are then dropped by the next full call instead). The set is rebuilt
    from the store every ``refresh`` seconds, so a message stored some other way
    is delivered anyway. No-op on any other grid (deployment, tests). Returns
    whether the store is wrapped.
    """
    try:
        from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    except ImportError:  # another Flower layout: keep Flower's own scan
        return False
    state = getattr(grid, "state", None)
    if not isinstance(state, InMemoryLinkState) or not isinstance(getattr(state, "message_ins_store", None), dict):
        return False
    if getattr(state.get_message_ins, "_skips_empty_inbox", False):
        return True
    full_scan, store_one = state.get_message_ins, state.store_message_ins
    waiting: set = set()
    rebuilt = [0.0]

    def undelivered(node_id=None):  # call with state.lock held (every writer of the store holds it)
        return {m.metadata.dst_node_id for m in state.message_ins_store.values()
                if m.metadata.delivered_at == "" and (node_id is None or m.metadata.dst_node_id == node_id)}

    def store_message_ins(message):
        with state.lock:
            message_id = store_one(message)
            if message_id:
                waiting.add(message.metadata.dst_node_id)
        return message_id

    def get_message_ins(node_id, limit, *, run_id=None):
        if time.monotonic() - rebuilt[0] > refresh:
            with state.lock:
                waiting.clear()
                waiting.update(undelivered())
                rebuilt[0] = time.monotonic()
        if node_id not in waiting and (limit is None or limit >= 1):
            return []
        out = full_scan(node_id, limit, run_id=run_id)
        with state.lock:
            if not undelivered(node_id):
                waiting.discard(node_id)
        return out

    get_message_ins._skips_empty_inbox = True
    state.store_message_ins, state.get_message_ins = store_message_ins, get_message_ins
    return True


def _copy(content: RecordDict, skip=()) -> RecordDict:
    return RecordDict({k: v for k, v in content.items() if k not in skip and k != "round"})


# ------------------------------------------------------------------ the firm


def firm_metrics(table: dict, spec: FirmSpec, *, n_jobs: int = 1) -> list[dict]:
    """Train the firm on every label row of the reports and evaluate each on the test set.

    Row 0 holds the labels when nobody relabels; the others are trained along
    warm-start chains exactly as :func:`simulations.engine.run_seed` does (same
    design matrix, same chains in the same order), so the metrics match the
    vectorised engine's bit for bit. The firm reads only the reports.
    """
    from simulations.engine import TestSet, firm_design, train_cells

    sc = spec.scenario
    labels = table["labels"]
    test = TestSet(spec.X_test, spec.y_test, spec.a_test, spec.X_test_cf)
    estimator = make_estimator(sc["firm"]["model"], sc["firm"]["params"], random_state=spec.firm_seed)
    c = sc["collective"]
    # Row r > 0 is one cell's reported labels; chains as the engine's: one per (method, alpha).
    cells = [((method, alpha), labels[row] != labels[0])
             for row, (_, method, _, alpha, _) in enumerate(cell_plan(c["methods"], c["alphas"], c["budgets"]), start=1)]
    base, per_cell = train_cells(estimator, firm_design(estimator, table["X"]), labels[0], cells, test,
                                 warm=bool(sc["engine"]["warm_start"]), n_jobs=n_jobs)
    return [base, *per_cell]


# ------------------------------------------------------------------ rounds


@dataclass
class Coalition:
    """What the relay keeps between rounds: who the users and the coordinator are, and
    the coordinator's opaque cutoffs-and-signal answer (membership is fixed at sign-up)."""

    users: list = field(default_factory=list)
    coordinator: int | None = None
    signal: RecordDict | None = None
    scored: bool = False  # the coordinator holds the members' scores for this signal


def _forward(replies: dict, record: str, stage: str) -> RecordDict:
    """One message to the coordinator carrying every member's record, unread."""
    content = RecordDict({"stage": ConfigRecord({"stage": stage})})
    for i, n in enumerate(sorted(replies)):
        if record in replies[n].content:
            content[f"member-{i}"] = replies[n].content[record]
    return content


def _sign_up(wire: Wire, nodes) -> Coalition:
    """First round: minority users join; the coordinator sizes the collective and
    publishes the shared signal."""
    joined = wire.wave({n: RecordDict() for n in nodes}, "query.join")
    roles = {n: str(r.content["node"]["role"]) for n, r in joined.items() if "node" in r.content}
    coalition = Coalition(users=sorted(n for n, role in roles.items() if role == "users"))
    coordinators = sorted(n for n, role in roles.items() if role == "coordinator")
    if len(coordinators) != 1:
        wire.log.error_reasons.append(f"round {wire.round}: {len(coordinators)} coordinators answered; nobody relabels")
        return coalition
    coalition.coordinator = coordinators[0]
    got = wire.wave({coalition.coordinator: _forward({n: joined[n] for n in coalition.users}, "join", "cutoffs")},
                    "query.coordinate")
    if coalition.coordinator in got:
        coalition.signal = _copy(got[coalition.coordinator].content)
    return coalition


def _thresholds(wire: Wire, coalition: Coalition, plan) -> tuple[RecordDict, dict]:
    """Members score themselves and the coordinator answers with thresholds.

    Scores depend only on a member's own x and the signal, which stays fixed
    after sign-up: from the second round on, the coordinator reuses the scores it
    was sent (``repeat``) and only the collection wave reaches every node, which
    halves a round's messages (what dominates with thousands of nodes).
    """
    if coalition.signal is None:
        return _no_thresholds(plan), {}
    coord = coalition.coordinator
    if coalition.scored:
        ask = RecordDict({"stage": ConfigRecord({"stage": "repeat"})})
    else:
        scored = wire.wave({n: _copy(coalition.signal) for n in coalition.users}, "query.scores")
        ask = _forward(scored, "candidates", "thresholds")
    got = wire.wave({coord: ask}, "query.coordinate")
    if coord not in got:
        return _no_thresholds(plan), {}
    coalition.scored = True
    answer = got[coord].content
    summary = {k: v.numpy().tolist() for k, v in answer["summary"].items()} if "summary" in answer else {}
    return _copy(answer, skip=("summary",)), summary


def _no_thresholds(plan) -> RecordDict:
    """What users get when the coalition could not agree: thresholds nobody reaches."""
    from agents.client_app import record_of

    inf = np.full(plan.n_cells, np.inf)
    return RecordDict({
        "thresholds": record_of(cutoffs=np.zeros(len(plan.alphas)), score=inf, ticket=inf),
        "plan": ConfigRecord({"methods": list(plan.methods), "n_alphas": len(plan.alphas), "n_budgets": len(plan.budgets)}),
    })


def run_rounds(grid: Grid, settings: RunSettings) -> dict:
    """Run every round and write the results; returns the results dict."""
    spec = load_firm_spec(settings.run_dir)
    sc = spec.scenario
    plan = cell_plan(sc["collective"]["methods"], sc["collective"]["alphas"], sc["collective"]["budgets"])
    n_jobs = int(sc["engine"].get("n_jobs", 1))
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    t_start = time.perf_counter()
    if n_jobs != 1:  # start the firm's worker processes while the coalition talks
        threading.Thread(target=_prewarm, args=(n_jobs,), daemon=True).start()
    nodes = wait_for_nodes(grid, settings.expected_nodes, settings.node_wait)
    results = {"expected_nodes": settings.expected_nodes, "connected_nodes": len(nodes),
               "node_wait_seconds": time.perf_counter() - t_start, "rounds": []}
    table, coalition = None, None
    for round_ in range(1, settings.rounds + 1):
        t0 = time.perf_counter()
        wire = Wire(grid, round_, settings.timeout, settings.window)
        log = wire.log
        if coalition is None:
            coalition = _sign_up(wire, nodes)
        thresholds, summary = _thresholds(wire, coalition, plan)
        users = coalition.users
        t1 = time.perf_counter()
        got = wire.wave({n: _copy(thresholds) for n in users}, "train.report")
        reports = [(n, {k: v.numpy() for k, v in r.content["report"].items()}) for n, r in got.items()
                   if "report" in r.content]
        intake = validate_reports(reports, n_features=spec.n_features, n_label_rows=plan.n_cells + 1,
                                  known_ids=spec.customer_ids)
        t2 = time.perf_counter()
        table = assemble(intake.accepted, order=spec.customer_ids)
        metrics = firm_metrics(table, spec, n_jobs=n_jobs)
        t3 = time.perf_counter()
        flips = (table["labels"][1:] != table["labels"][0]).sum(axis=1)
        results["rounds"].append({
            "round": round_,
            "n_train": int(table["user_ids"].size),
            "n_minority": int((table["a"] == 1).sum()),
            "nodes": {"users": len(users), "reports_accepted": len(intake.accepted),
                      "reports_rejected": dict(intake.rejected), "rejected_nodes": {str(k): v for k, v in intake.rejected_nodes.items()}},
            "messages": {k: dict(v) for k, v in log.counts.items()},
            "errors": log.error_reasons[:20],
            "coalition": summary,
            "flips": flips.tolist(),
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
